package channellayer

import "github.com/heraldhq/herald/groups"

// LocalStatser is implemented by layers that can count this instance's
// channels, groups and members, for metrics.
type LocalStatser interface {
	LocalStats() groups.Stats
}

var (
	_ LocalStatser = (*Memory)(nil)
	_ LocalStatser = (*Redis)(nil)
)

// LocalStats implements LocalStatser.
func (l *Memory) LocalStats() groups.Stats { return l.reg.Stats() }

// LocalStats implements LocalStatser.
func (l *Redis) LocalStats() groups.Stats { return l.reg.Stats() }
