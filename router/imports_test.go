package router_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestKnowsNoApp: router is framework; the demo's posts reach it only as
// handlers mounted on its routes, so nothing it imports, directly or
// not, is the notifier or the demo.
func TestKnowsNoApp(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for pkg := range strings.FieldsSeq(string(out)) {
		if pkg == "github.com/heraldhq/herald/notifier" || strings.HasPrefix(pkg, "github.com/heraldhq/herald/cmd/") {
			t.Errorf("router imports %s", pkg)
		}
	}
}
