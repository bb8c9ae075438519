package notifier_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind, such as a
// Listener still running or a pool not closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
