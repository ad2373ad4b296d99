"""How the engine compiles: numba (optional at import, required to run), the compile flags
the kernels share, and the LLVM operations numba does not expose, as intrinsics: a
prefetch, a bit cast, and the atomics that the threads of one parallel region meet on.

numba's on-disk cache (``cache=True``) keys each compiled function on its own file only:
after editing a helper here, in ``scalar_math.py`` or in ``kernels.py``, delete
``src/dualsparse/engine/__pycache__``, or the kernels of the other files keep the old helper
compiled in (an install replaces every file, so users are not affected).
"""

from __future__ import annotations

import platform

from dualsparse.errors import DualsparseError

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = platform.system() != "Windows"

try:
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # the engine refuses to start (require_numba); importing stays possible
    numba = None

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda function: function

    intrinsic = njit


# Fused multiply-add only (no reassociation, no NaN/inf assumptions): a*b + c in one
# rounding is as exact as PyTorch's own kernels and saves an instruction per nonzero.
# The step kernels also take error_model="numpy": a division by zero gives inf as in
# numpy instead of a ZeroDivisionError check, which keeps the loops over units from
# vectorising.
FUSED = {"contract"}


def require_numba() -> None:
    if numba is None:
        raise DualsparseError(
            "the inference engine needs numba, which is not installed; "
            "install it with: pip install 'dualsparse[engine]'"
        )


def _item_pointer(context, builder, signature, args):
    """The address of ``array[index]``, the intrinsic's first two arguments (no bounds
    check, no negative index)."""
    array_type = signature.args[0]
    data = context.make_array(array_type)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, array_type, data, [args[1]], wraparound=False)


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the cache for the line holding ``array[index]`` (llvm.prefetch; no fault if the
    index is out of range, nothing is read into a register)."""

    def codegen(context, builder, signature, args):
        i8_pointer = ir.IntType(8).as_pointer()
        pointer = builder.bitcast(_item_pointer(context, builder, signature, args), i8_pointer)
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        builder.call(function, [pointer, i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()

    return types.none(array, index), codegen


@intrinsic
def double_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (a register move, no memory)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# Two threads meeting inside one parallel region (``kernels_sharded``): a counter that
# threads add to and another thread reads. The add is sequentially consistent (x86: lock
# xadd), so everything a thread wrote before it is seen by a thread whose acquiring read
# sees the add; neither the compiler nor the processor moves later reads above that read.


@intrinsic
def atomic_add(typingctx, array, index, value):
    """array[index] += value as one atomic operation; returns the value before the add
    (int64 arrays)."""

    def codegen(context, builder, signature, args):
        pointer = _item_pointer(context, builder, signature, args)
        return builder.atomic_rmw("add", pointer, args[2], "seq_cst")

    return types.int64(array, index, types.int64), codegen


@intrinsic
def atomic_read(typingctx, array, index):
    """array[index], read with acquire ordering (int64 arrays)."""

    def codegen(context, builder, signature, args):
        pointer = _item_pointer(context, builder, signature, args)
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def spin_pause(typingctx):
    """The x86 pause hint of a spin-wait loop (frees the core's resources for its sibling,
    and leaves the loop without a memory-order misprediction); nothing on other processors."""

    def codegen(context, builder, signature, args):
        if _X86:
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(function, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def sleep_briefly(typingctx):
    """usleep(1): a spin-wait that has waited long sleeps (the scheduler's timer slack makes
    it tens of µs), so that the thread it waits for can have the core, if there are more
    runnable threads than cores; nothing on Windows (the wait spins on)."""

    def codegen(context, builder, signature, args):
        if _POSIX:
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), [ir.IntType(32)]), "usleep"
            )
            builder.call(function, [ir.IntType(32)(1)])
        return context.get_dummy_value()

    return types.none(), codegen
