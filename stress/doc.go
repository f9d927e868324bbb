// Package stress owns ovlmount's random-operation differential tester. A
// round generates layers from a seed, mounts identical copies under kernel
// overlayfs (the oracle) and under a FUSE overlay program, and runs
// several worker processes at once, each performing its own seeded
// sequence of mixed operations in its own part of the namespace on both
// mounts and comparing every result at once. After the operations it
// compares the merged trees, the raw upper layers, each side after a
// remount, and each upper layer under the other implementation. A
// divergence is reported with its seed and shrunk, in a single process, to
// a minimal sequence that still diverges, which can be replayed.
//
// It reuses the conformance package's layers, mounts, operations, walks
// and diffs; what may legitimately differ between the two sides is decided
// there (diff.go), and here only for what concurrency makes
// nondeterministic (see relax). It never modifies the programs it tests,
// and touches nothing outside the directories it is given and the mounts
// it makes there.
package stress
