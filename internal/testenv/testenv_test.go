package testenv

import "testing"

func TestMountType(t *testing.T) {
	if MountType("/") == "" {
		t.Error(`MountType("/") is empty; / is always a mountpoint`)
	}
	if typ := MountType(t.TempDir()); typ != "" {
		t.Errorf("a fresh temporary directory is listed as a %q mount", typ)
	}
	if typ := MountType("/proc"); typ != "proc" {
		t.Errorf(`MountType("/proc") = %q, want "proc"`, typ)
	}
}
