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
(a key's search exceeded --budget). Standard library only.
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
    must = 0
    for i in range(n):
        if returns[i] != INFINITE:
            must |= 1 << i
    seen = set()
    nodes = 0

    def candidates(done):
        deadline = min((returns[j] for j in range(n) if not done >> j & 1), default=INFINITE)
        return [i for i in range(n) if not done >> i & 1 and calls[i] <= deadline]

    start = (0, (False, ""))
    stack = [(start, iter(candidates(0)))]
    seen.add(start)
    while stack:
        (done, state), options = stack[-1]
        if done & must == must:
            return True
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
            stack.append((config, iter(candidates(config[0]))))
            advanced = True
            break
        if not advanced:
            stack.pop()
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--budget", type=int, default=20_000_000,
                        help="search nodes per key before the key is undecided")
    args = parser.parse_args()
    try:
        operations = read_history(args.file)
    except (BadInput, OSError) as error:
        print("check_history.py: %s" % error, file=sys.stderr)
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
            if not linearizable(by_key[key], args.budget):
                violating.append(key)
        except BudgetExceeded:
            undecided.append(key)
    print("operations: %d, keys: %d" % (len(operations), len(by_key)))
    if violating:
        print("verdict: not linearizable; keys: %s" % ", ".join(json.dumps(k) for k in violating))
        return 1
    if undecided:
        print("verdict: undecided; keys: %s" % ", ".join(json.dumps(k) for k in undecided))
        return 2
    print("verdict: linearizable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
