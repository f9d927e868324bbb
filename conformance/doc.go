// Package conformance owns ovlmount's differential conformance suite: it
// builds overlay layer trees from Go values, runs scenarios of raw system
// calls on kernel overlayfs and on a FUSE overlay program over identical
// layers, observes results, merged trees, remounts and raw upper layers,
// and reports every difference (RunScenario, RunSuite, WriteMarkdown).
// Kernel overlayfs is the oracle; a difference is a bug in the FUSE
// program unless diff.go documents why the field cannot match,
// accepted.txt explains why ovlmount differs, or pending.txt lists the
// scenario as one whose mount options or layer format ovlmount does not
// support yet. It never modifies the
// programs it tests, and touches nothing outside the directories it is
// given.
package conformance
