#!/usr/bin/env python3
"""An independent linearizability checker for lockstep histories (JSON lines).

Why it exists: `lockstep check-history` is the project's checker; this one cross-validates it.
It shares no code with it and is deliberately naive, so that a bug in one is unlikely to be
repeated in the other:

  * the format is /work/shared/history-format.md (plus "del", which the KV store has);
  * keys are checked separately (every operation touches one key, and a product of independent
    registers is linearizable exactly when each register is: P-compositionality);
  * per key, the plain Wing & Gong (1993) search: repeatedly pick any not-yet-linearized
    operation that is minimal in real-time order (no other pending, completed operation returned
    before it was called), apply it to the model, recurse; backtrack on failure. Explored
    (linearized set, model state) pairs are remembered so each is tried once;
  * ok:false operations are dropped; ok:null operations have no return (they may take effect at
    any time after their call, or never) and no output constraint; equal call/return times count
    as concurrent.

Model (one register per key, as src/apps/kv/kv_machine.h): get returns the value or "" when
absent; put sets; append concatenates (absent counts as ""); del removes; cas e v sets v and
returns "true" when the key is present and equals e, else "false".

Exit codes (same as the C++ tool): 0 linearizable, 1 not linearizable, 2 bad input or undecided
(a key's search exceeded --budget). Several files may be given (one Python start-up for many
histories); each gets a verdict line "FILE: ..." and the exit code is the largest. Standard
library only.
"""

import argparse
import json
import sys

INFINITE = float("inf")
UINT64_MAX = 2**64 - 1
KINDS = ("get", "put", "append", "cas", "del")


class BadInput(Exception):
    pass


def _reject_constant(name):
    raise ValueError("invalid JSON constant " + name)


def _unsigned(obj, field, line, null_ok):
    if field not in obj:
        raise BadInput("line %d, field %r: missing field" % (line, field))
    value = obj[field]
    if value is None and null_ok:
        return None
    # bool is a subclass of int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise BadInput("line %d, field %r: expected a non-negative integer" % (line, field))
    return value


def _string(obj, field, line, required):
    if field not in obj or (obj[field] is None and not required):
        if required:
            raise BadInput("line %d, field %r: missing field" % (line, field))
        return None
    value = obj[field]
    if not isinstance(value, str):
        raise BadInput("line %d, field %r: expected a string" % (line, field))
    return value


def parse_line(text, line):
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise BadInput("line %d: bad JSON: %s" % (line, error))
    if not isinstance(obj, dict):
        raise BadInput("line %d: expected a JSON object" % line)
    client = _unsigned(obj, "client", line, False)
    kind = _string(obj, "op", line, True)
    if kind not in KINDS:
        raise BadInput("line %d, field 'op': unknown op %r" % (line, kind))
    key = _string(obj, "key", line, True)
    value = _string(obj, "value", line, kind in ("put", "append", "cas"))
    expected = _string(obj, "expected", line, kind == "cas")
    call = _unsigned(obj, "call", line, False)
    ret = _unsigned(obj, "return", line, True)
    if ret is not None and ret < call:
        raise BadInput("line %d, field 'return': return is before call" % line)
    if "ok" not in obj:
        raise BadInput("line %d, field 'ok': missing field" % line)
    ok = obj["ok"]
    if ok is not None and not isinstance(ok, bool):
        raise BadInput("line %d, field 'ok': expected true, false or null" % line)
    if ok is True and ret is None:
        raise BadInput("line %d, field 'return': ok is true but return is null" % line)
    needs_output = ok is True and kind in ("get", "cas")
    output = _string(obj, "output", line, False)
    if needs_output:
        if output is None:
            raise BadInput("line %d, field 'output': missing field" % line)
        if kind == "cas" and output not in ("true", "false"):
            raise BadInput("line %d, field 'output': cas output must be true or false" % line)
    else:
        output = None
    return {
        "client": client, "op": kind, "key": key, "value": value, "expected": expected,
        "call": call, "return": ret, "ok": ok, "output": output,
    }


def read_history(path):
    operations = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput("line %d: not UTF-8" % number)
            if not text.strip():
                continue
            operations.append(parse_line(text, number))
    return operations


def step(state, op):
    """The register after `op` in `state`, or None when op's recorded output is impossible."""
    present, current = state
    kind = op["op"]
    if kind == "get":
        return state if op["output"] == (current if present else "") else None
    if kind == "put":
        return (True, op["value"])
    if kind == "append":
        return (True, (current if present else "") + op["value"])
    if kind == "del":
        return (False, "")
    # cas
    matches = present and current == op["expected"]
    if op["output"] is not None and (op["output"] == "true") != matches:
        return None
    return (True, op["value"]) if matches else state


class BudgetExceeded(Exception):
    pass


def linearizable(ops, budget):
    """Wing & Gong search over one key's operations (iterative, so deep keys need no recursion)."""
    ops = sorted(ops, key=lambda o: o["call"])
    n = len(ops)
    calls = [o["call"] for o in ops]
    returns = [INFINITE if o["return"] is None else o["return"] for o in ops]
    # Completed operations by return time: the first one not yet linearized is the deadline,
    # the latest point by which the next operation must have been called.
    by_return = sorted((i for i in range(n) if returns[i] != INFINITE), key=lambda i: returns[i])
    seen = set()
    nodes = 0

    def first_pending(done, position):
        while position < len(by_return) and done >> by_return[position] & 1:
            position += 1
        return position

    def candidates(done, position):
        deadline = returns[by_return[position]]
        i = ((~done) & (done + 1)).bit_length() - 1  # lowest operation not yet linearized
        while i < n and calls[i] <= deadline:
            if not done >> i & 1:
                yield i
            i += 1

    position = first_pending(0, 0)
    if position == len(by_return):
        return True  # nothing completed: every unknown operation may never have happened
    stack = [(0, (False, ""), position, candidates(0, position))]
    seen.add((0, (False, "")))
    while stack:
        done, state, position, options = stack[-1]
        advanced = False
        for i in options:
            nodes += 1
            if nodes > budget:
                raise BudgetExceeded()
            after = step(state, ops[i])
            if after is None:
                continue
            config = (done | 1 << i, after)
            if config in seen:
                continue
            seen.add(config)
            next_position = first_pending(config[0], position)
            if next_position == len(by_return):
                return True  # every completed operation is linearized
            stack.append((config[0], after, next_position, candidates(config[0], next_position)))
            advanced = True
            break
        if not advanced:
            stack.pop()
    return False


def check_file(path, budget):
    """Checks one file, prints its verdict line(s) and returns its exit code."""
    try:
        operations = read_history(path)
    except (BadInput, OSError) as error:
        print("%s: bad input: %s" % (path, error))
        return 2
    by_key = {}
    for op in operations:
        if op["ok"] is False:
            continue  # certainly had no effect
        if op["ok"] is None and op["op"] == "get":
            continue  # neither changes the register nor constrains it
        by_key.setdefault(op["key"], []).append(op)
    violating, undecided = [], []
    for key in sorted(by_key):
        try:
            if not linearizable(by_key[key], budget):
                violating.append(key)
        except BudgetExceeded:
            undecided.append(key)
    summary = "%s: %d operations, %d keys: " % (path, len(operations), len(by_key))
    if violating:
        print(summary + "not linearizable; keys: " + ", ".join(json.dumps(k) for k in violating))
        return 1
    if undecided:
        print(summary + "undecided; keys: " + ", ".join(json.dumps(k) for k in undecided))
        return 2
    print(summary + "linearizable")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="history files; with several, one verdict line each and the "
                             "largest exit code")
    parser.add_argument("--budget", type=int, default=20_000_000,
                        help="search nodes per key before the key is undecided")
    args = parser.parse_args()
    return max(check_file(path, args.budget) for path in args.files)


if __name__ == "__main__":
    sys.exit(main())
