package notifier_test

import (
	"testing"

	"github.com/heraldhq/herald/notifier/pgtest"
)

// cluster is a PostgreSQL server that one test owns (pgtest.Cluster), so
// that it can stop and start it.
type cluster struct{ *pgtest.Cluster }

func newCluster(t *testing.T) cluster { return cluster{pgtest.StartCluster(t)} }

func (c cluster) url() string { return c.URL() }
func (c cluster) start()      { c.Start() }
func (c cluster) crash()      { c.Crash() }
