module github.com/ovlmount/ovlmount

go 1.26.8

require (
	github.com/jacobsa/fuse v0.0.0-20260630194014-a124548f6da7
	golang.org/x/sys v0.49.0
)
