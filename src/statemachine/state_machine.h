// The interface a user implements to have a service replicated by lockstep.
//
// Determinism contract: given the same initial state (or the same snapshot) and the same sequence
// of commands, every replica's `apply` must return the same results and reach the same state. So
// `apply` must not read clocks, draw random numbers, iterate over containers whose order depends
// on addresses or hashing seeds, read files, or depend on anything outside the machine's state and
// the command. Anything time-dependent must come in the command itself.
//
// Threading: lockstep calls a machine from one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>

#include "core/types.h"

namespace lockstep {

class StateMachine {
 public:
  virtual ~StateMachine() = default;

  // Executes one command and returns its output. A malformed command must not throw or change
  // the state: return an error output instead (the command came from a client, not from us).
  virtual Bytes apply(std::span<const uint8_t> command) = 0;

  // Serializes the whole state. restore(snapshot()) on a fresh machine gives an equal machine.
  virtual Bytes snapshot() const = 0;

  // Replaces the state with a snapshot. Throws SnapshotError on malformed input and then leaves
  // the machine as it was.
  virtual void restore(std::span<const uint8_t> snapshot) = 0;
};

class SnapshotError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lockstep
