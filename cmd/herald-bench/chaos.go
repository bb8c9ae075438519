package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runChaos runs cmd/herald's chaos soak (TestChaos) for longer than CI
// does: three instances on a Redis and a Postgres of its own, clients
// and publishers, faults drawn from -seed, and the oracle that checks
// every delivery promise at the end. It runs "go test" in the module the
// tool is started from, so it needs the source tree and the Go
// toolchain, and prints the test's JSON summary.
func runChaos(args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	seed := fs.Uint64("seed", 0, "seed of the fault schedule (0: a random one, printed)")
	dur := fs.Duration("duration", 10*time.Minute, "how long faults and traffic run, at most 2h")
	faults := fs.String("faults", "all", "comma-separated fault classes, \"all\", \"none\" or \"default\" (the set CI runs); see cmd/herald/chaos_test.go")
	redis := fs.String("redis", "single", "single: one Redis server; cluster: a 6-node Redis Cluster with replicas")
	verbose := fs.Bool("v", false, "stream the test's log (faults as they happen, the instances' logs on failure)")
	record := fs.String("record", "", "file to append the JSON summary to, as one line")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *dur <= 0 || *dur > 2*time.Hour:
		return fmt.Errorf("-duration: want more than 0, at most 2h")
	case *redis != "single" && *redis != "cluster":
		return fmt.Errorf("-redis: want single or cluster, got %q", *redis)
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	report, err := os.CreateTemp("", "herald-chaos-*.json")
	if err != nil {
		return err
	}
	report.Close()
	defer os.Remove(report.Name())

	// The test's own budget: startup, the run, and the settling at the
	// end, with room to spare; the test stops by itself well within it.
	budget := *dur + 10*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget+time.Minute)
	defer cancel()
	testArgs := []string{"test", "-count=1", "-timeout", budget.String(), "-run", "^TestChaos$", "./cmd/herald/"}
	if *verbose {
		testArgs = append(testArgs, "-v")
	}
	cmd := exec.CommandContext(ctx, "go", testArgs...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"HERALD_CHAOS_DURATION="+dur.String(),
		"HERALD_CHAOS_REDIS="+*redis,
		"HERALD_CHAOS_REPORT="+report.Name(),
		"HERALD_REQUIRE_SERVICES=1", // a soak that skips says nothing
	)
	if *faults != "default" {
		cmd.Env = append(cmd.Env, "HERALD_CHAOS_FAULTS="+*faults)
	}
	if *seed != 0 {
		cmd.Env = append(cmd.Env, "HERALD_CHAOS_SEED="+strconv.FormatUint(*seed, 10))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintf(os.Stderr, "herald-bench chaos: go %s (in %s, %v of faults)\n", strings.Join(testArgs, " "), root, *dur)
	runErr := cmd.Run()

	b, err := os.ReadFile(report.Name())
	if err != nil || len(b) == 0 {
		if runErr != nil {
			return fmt.Errorf("the soak did not finish: %w", runErr)
		}
		return fmt.Errorf("the soak wrote no summary")
	}
	var sum map[string]any
	if err := json.Unmarshal(b, &sum); err != nil {
		return fmt.Errorf("the soak's summary: %w", err)
	}
	sum["time"] = time.Now().UTC().Format(time.RFC3339)
	line, _ := json.Marshal(sum)
	viol, _ := json.Marshal(sum["violations"])
	fmt.Printf("chaos seed=%v duration=%v faults=%v pass=%v violations=%s\n", sum["seed"], sum["duration"], sum["faults"], sum["pass"], viol)
	fmt.Println(string(line))
	if *record != "" {
		f, err := os.OpenFile(*record, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := fmt.Fprintln(f, string(line)); err != nil {
			return err
		}
	}
	if pass, _ := sum["pass"].(bool); !pass {
		return fmt.Errorf("promises violated; replay: %v", sum["replay"])
	}
	return runErr
}

// moduleRoot is the directory of the go.mod of the working directory's
// module, which must be Herald's.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run herald-bench chaos inside Herald's source tree: it runs cmd/herald's TestChaos")
	}
	b, err := os.ReadFile(mod)
	if err != nil || !strings.Contains(string(b), "module github.com/heraldhq/herald\n") {
		return "", fmt.Errorf("%s is not Herald's go.mod", mod)
	}
	return filepath.Dir(mod), nil
}
