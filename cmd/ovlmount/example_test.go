package main

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestExample runs example/run.sh, what README's first command runs, on
// the binary under test: it builds the bundled layers, mounts them, walks
// and writes through the mount and mounts the result with the kernel, and
// stops at the first step that fails.
func TestExample(t *testing.T) {
	testenv.RequireMount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "../../example/run.sh", testenv.Binary(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("example/run.sh: %v\n%s", err, out)
	}
}
