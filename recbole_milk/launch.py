"""Start the processes of a multi-process run and end the run as soon as one of them fails.

Each process runs `target(local_rank, *args)` in a fresh interpreter (the spawn start method, which CUDA needs) and
reports back over its own pipe: its result, or its error with the traceback. The launcher waits on the pipes and on
the processes themselves; on the first error, or a process that dies without one (killed, out of memory), it stops
the others at once, so peers blocked in a collective never hang the run, and raises that error here. A user error
(UserInputError) is raised as itself, so the command-line scripts still print one line. If the launcher itself is
killed, its processes end with it (Linux).

A script that starts a multi-process run needs the `if __name__ == "__main__":` guard (the spawn start method
imports the script's main module again in every process).
"""
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, List, Optional, Tuple

from recbole_milk.errors import UserInputError

STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class RankFailedError(RuntimeError):
    """A process of a multi-process run failed with an error that is not a user error; the message holds its
    traceback."""


def free_port(host: str = "localhost") -> int:
    """A TCP port free on `host` now, for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _portable(error: BaseException) -> Optional[BaseException]:
    """`error` if it survives pickling (so the launcher can raise it as itself), else None."""
    try:
        copy = pickle.loads(pickle.dumps(error))
    except Exception:  # any pickling failure: the launcher falls back to the message and traceback text
        return None
    return copy if isinstance(copy, BaseException) else None


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel end this process when the launcher dies (killed, it cannot stop its processes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl: the launcher's own clean-up is all there is
        return
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _child(target: Callable[..., Any], local_rank: int, args: Tuple[Any, ...], channel: Connection,
           parent: int) -> None:
    _die_with_parent(parent)
    try:
        result = target(local_rank, *args)
    except BaseException as error:  # everything, KeyboardInterrupt included, must reach the launcher
        _send(channel, ("error", _portable(error), f"{type(error).__name__}: {error}", traceback.format_exc()))
        channel.close()
        # No clean-up of the process group: peers may be blocked in a collective; the launcher stops them.
        raise SystemExit(1) from None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 hosts the rendezvous store: nobody leaves before everyone is done with it
        dist.destroy_process_group()
    _send(channel, ("result", result))
    channel.close()


def _send(channel: Connection, message: Tuple[Any, ...]) -> None:
    # Plain pickle: the pipe's own pickler would pass tensors as shared memory, gone once this process exits.
    channel.send_bytes(pickle.dumps(message))


def _stop(processes: List[multiprocessing.Process]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


def _failure(local_rank: int, message: Tuple[Any, ...]) -> BaseException:
    _, error, summary, trace = message
    if isinstance(error, UserInputError):
        return error
    return RankFailedError(f"the process of local rank {local_rank} failed with {summary}\n"
                           f"--- its traceback ---\n{trace}")


def _death(local_rank: int, exitcode: Optional[int]) -> RankFailedError:
    if exitcode is not None and exitcode < 0:
        how = f"was killed by signal {signal.Signals(-exitcode).name}"
    else:
        how = f"exited with status {exitcode} without reporting an error"
    return RankFailedError(f"the process of local rank {local_rank} {how} (out of memory, or killed from outside?); "
                           "the run was stopped.")


def run_processes(target: Callable[..., Any], nproc: int, args: Tuple[Any, ...] = ()) -> Any:
    """Run `target(local_rank, *args)` for local_rank 0..nproc-1 in parallel processes; return local rank 0's
    result once all have finished. The first failure stops every process and is raised here."""
    context = multiprocessing.get_context("spawn")
    processes: List[multiprocessing.Process] = []
    channels: Dict[Connection, int] = {}
    try:
        for local_rank in range(nproc):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(target, local_rank, args, writer, os.getpid()),
                                      name=f"recbole-milk-rank-{local_rank}")
            process.start()
            writer.close()  # the child holds the write end; EOF then means it is gone
            processes.append(process)
            channels[reader] = local_rank
        results: Dict[int, Any] = {}
        sentinels = {process.sentinel: local_rank for local_rank, process in enumerate(processes)}
        while len(results) < nproc:
            for ready in wait(list(channels) + list(sentinels)):
                if ready in channels:
                    local_rank = channels[ready]
                    try:
                        message = pickle.loads(ready.recv_bytes())
                    except EOFError:
                        del channels[ready]
                        continue
                    if message[0] == "error":
                        raise _failure(local_rank, message)
                    results[local_rank] = message[1]
                elif ready in sentinels:
                    local_rank = sentinels.pop(ready)
                    process = processes[local_rank]
                    process.join()
                    reader = next(channel for channel, owner in channels.items() if owner == local_rank) \
                        if local_rank in channels.values() else None
                    if reader is not None and reader.poll():
                        continue  # its report is waiting in the pipe: read it on the next pass
                    if local_rank not in results:
                        raise _death(local_rank, process.exitcode)
        for process in processes:
            process.join()
        return results[0]
    finally:
        _stop(processes)
        for reader in channels:
            reader.close()
