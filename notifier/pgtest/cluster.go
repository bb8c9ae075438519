package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// Cluster is a PostgreSQL server that one test owns, so that it can stop
// and start it: the shared server must never be restarted.
type Cluster struct {
	t    testing.TB
	bin  string   // directory of initdb, pg_ctl
	dir  string   // data directory and socket directory live here
	run  []string // prefix that runs a command as the server's owner
	port int
}

// StartCluster creates a private cluster on a free loopback port, starts
// it, and removes it when the test ends. It skips the test when the
// server's programs are not installed, or when running as root without a
// postgres user to run them as (initdb refuses root), unless
// HERALD_REQUIRE_SERVICES=1, where it fails instead.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		unavailable(t, "no /usr/lib/postgresql/*/bin/initdb to run a private PostgreSQL cluster")
	}
	slices.Sort(bins)
	c := &Cluster{t: t, bin: filepath.Dir(bins[len(bins)-1])}

	dir, err := os.MkdirTemp("", "herald-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, fmt.Sprintf("running as root and no postgres user to run a private cluster as: %v", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			unavailable(t, "running as root and no runuser to drop privileges for a private cluster")
		}
		c.run = []string{runuser, "-u", "postgres", "--"}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	c.cmd("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
	c.Start()
	t.Cleanup(func() { _ = c.exec("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop") })
	return c
}

func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("HERALD_REQUIRE_SERVICES") == "1" {
		t.Fatal("pgtest: " + msg + " and HERALD_REQUIRE_SERVICES=1")
	}
	t.Skip("pgtest: " + msg + " (set HERALD_REQUIRE_SERVICES=1 to fail instead)")
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// URL returns the URL of the cluster's postgres database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.port)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off", c.port, c.dir)
	c.cmd("pg_ctl", "-D", c.data(), "-o", opts, "-l", filepath.Join(c.dir, "log"), "-w", "start")
}

// Crash stops the server the way a crash or a power cut would: no
// goodbye to clients, recovery from the WAL on the next start.
func (c *Cluster) Crash() {
	c.t.Helper()
	c.cmd("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
}

func (c *Cluster) cmd(name string, args ...string) {
	c.t.Helper()
	if err := c.exec(name, args...); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		c.t.Fatalf("%s: %v\nserver log:\n%s", name, err, log)
	}
}

func (c *Cluster) exec(name string, args ...string) error {
	argv := append(slices.Clone(c.run), filepath.Join(c.bin, name))
	argv = append(argv, args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}
