package overlay

import (
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestMain runs the tests below a temporary directory named for this
// process, after taking down what dead test runs left behind.
func TestMain(m *testing.M) { testenv.Main(m) }
