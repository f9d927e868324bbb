// Package conformance owns ovlmount's differential test harness: it builds
// overlay layer trees from Go values, mounts them both with the kernel's
// overlayfs and with a FUSE overlay program, walks the merged trees and
// reports every observable difference. Kernel overlayfs is the oracle; any
// difference it reports is a bug in the FUSE program unless diff.go
// documents why the field cannot match.
package conformance
