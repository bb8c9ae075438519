package groups_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/groups"
)

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) member(name string) groups.Member {
	return groups.MemberFunc(func(_ string, data []byte) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n[name]++
	})
}

func TestJoinLeaveFirstLast(t *testing.T) {
	var r groups.Registry
	c := &counter{n: map[string]int{}}
	r.AddChannel("a", c.member("a"))
	r.AddChannel("b", c.member("b"))
	if _, err := r.Join("g", "nope"); err == nil {
		t.Fatal("joining an unknown channel succeeded")
	}
	if first, _ := r.Join("g", "a"); !first {
		t.Error("first join not reported")
	}
	if first, _ := r.Join("g", "a"); first {
		t.Error("repeated join reported as first")
	}
	if first, _ := r.Join("g", "b"); first {
		t.Error("second member reported as first")
	}
	if n := r.SendGroup("g", "t", nil); n != 2 {
		t.Fatalf("SendGroup reached %d, want 2", n)
	}
	if last := r.Leave("g", "a"); last {
		t.Error("leave with a member left reported as last")
	}
	if last := r.Leave("g", "a"); last {
		t.Error("second leave reported as last")
	}
	if emptied := r.RemoveChannel("b"); len(emptied) != 1 || emptied[0] != "g" {
		t.Errorf("RemoveChannel emptied %v, want [g]", emptied)
	}
	if n := r.SendGroup("g", "t", nil); n != 0 {
		t.Fatalf("SendGroup after everyone left reached %d", n)
	}
	if c.n["a"] != 1 || c.n["b"] != 1 {
		t.Fatalf("deliveries %v", c.n)
	}
	if !r.SendChannel("a", "t", nil) || r.SendChannel("b", "t", nil) {
		t.Error("SendChannel does not follow registration")
	}
}

// TestAgainstModel applies random operations to a Registry and to a plain
// map model and checks that fan-out reaches exactly the model's members.
func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var r groups.Registry
	c := &counter{n: map[string]int{}}
	model := map[string]map[string]bool{} // group -> channels
	live := map[string]bool{}
	names := make([]string, 40)
	for i := range names {
		names[i] = fmt.Sprintf("ch%d", i)
	}
	groupNames := []string{"g0", "g1", "g2"}
	for step := 0; step < 20000; step++ {
		ch := names[rng.IntN(len(names))]
		g := groupNames[rng.IntN(len(groupNames))]
		switch rng.IntN(5) {
		case 0:
			if !live[ch] {
				r.AddChannel(ch, c.member(ch))
				live[ch] = true
			}
		case 1:
			emptied := r.RemoveChannel(ch)
			var want []string
			for gn, m := range model {
				if m[ch] {
					delete(m, ch)
					if len(m) == 0 {
						want = append(want, gn)
					}
				}
			}
			sort.Strings(emptied)
			sort.Strings(want)
			if fmt.Sprint(emptied) != fmt.Sprint(want) {
				t.Fatalf("step %d: RemoveChannel(%s) emptied %v, want %v", step, ch, emptied, want)
			}
			delete(live, ch)
		case 2:
			first, err := r.Join(g, ch)
			if !live[ch] {
				if err == nil {
					t.Fatalf("step %d: join of dead channel", step)
				}
				continue
			}
			if model[g] == nil {
				model[g] = map[string]bool{}
			}
			wantFirst := len(model[g]) == 0
			model[g][ch] = true
			if first != wantFirst {
				t.Fatalf("step %d: Join first=%v want %v", step, first, wantFirst)
			}
		case 3:
			last := r.Leave(g, ch)
			wantLast := model[g][ch] && len(model[g]) == 1
			delete(model[g], ch)
			if last != wantLast {
				t.Fatalf("step %d: Leave last=%v want %v", step, last, wantLast)
			}
		case 4:
			c.n = map[string]int{}
			n := r.SendGroup(g, "t", nil)
			if n != len(model[g]) || len(c.n) != n {
				t.Fatalf("step %d: SendGroup(%s) reached %d (%v), model has %v", step, g, n, c.n, model[g])
			}
			for name := range c.n {
				if !model[g][name] {
					t.Fatalf("step %d: %s got a message for %s it is not in", step, name, g)
				}
			}
		}
	}
}

// TestConcurrentFanoutAndChurn runs fan-out while members come and go; the
// race detector checks the snapshotting.
func TestConcurrentFanoutAndChurn(t *testing.T) {
	var r groups.Registry
	c := &counter{n: map[string]int{}}
	r.AddChannel("stable", c.member("stable"))
	if _, err := r.Join("g", "stable"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				r.AddChannel(name, c.member(name))
				_, _ = r.Join("g", name)
				r.Leave("g", name)
				r.RemoveChannel(name)
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		if r.SendGroup("g", "t", nil) < 1 {
			t.Fatal("stable member missing from a fan-out")
		}
	}
	wg.Wait()
	if st := r.Stats(); st != (groups.Stats{Channels: 1, Groups: 1, Members: 1}) {
		t.Fatalf("Stats after churn: %+v", st)
	}
	if c.n["stable"] != 2000 || r.Len("g") != 1 || r.Channels() != 1 {
		t.Fatalf("stable got %d, group len %d, channels %d", c.n["stable"], r.Len("g"), r.Channels())
	}
}

func BenchmarkSendGroup(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var r groups.Registry
			for i := 0; i < n; i++ {
				name := fmt.Sprint(i)
				r.AddChannel(name, groups.MemberFunc(func(string, []byte) {}))
				_, _ = r.Join("g", name)
			}
			data := []byte(`{"type":"name.gossip"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.SendGroup("g", "name.gossip", data)
			}
		})
	}
}

// BenchmarkJoinLeave is one channel joining and leaving a large group:
// its cost must not grow with the group.
func BenchmarkJoinLeave(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var r groups.Registry
			nop := groups.MemberFunc(func(string, []byte) {})
			for i := 0; i < n; i++ {
				r.AddChannel(fmt.Sprint(i), nop)
				_, _ = r.Join("g", fmt.Sprint(i))
			}
			r.AddChannel("x", nop)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, _ = r.Join("g", "x")
				r.Leave("g", "x")
			}
		})
	}
}

// TestMaxGroups: past the cap, a join that would make a new group is
// refused; joining a group that exists is not; leaving frees a place.
func TestMaxGroups(t *testing.T) {
	var r groups.Registry
	r.SetMaxGroups(2)
	for _, ch := range []string{"a", "b"} {
		r.AddChannel(ch, groups.MemberFunc(func(string, []byte) {}))
	}
	for _, g := range []string{"g1", "g2"} {
		if _, err := r.Join(g, "a"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.Join("g3", "a")
	if !errors.Is(err, groups.ErrGroupLimit) || !strings.Contains(err.Error(), `"g3"`) {
		t.Fatalf("join of a 3rd group: %v, want ErrGroupLimit naming g3", err)
	}
	if r.Stats().Groups != 2 || r.Stats().Members != 2 {
		t.Fatalf("a refused join changed the registry: %+v", r.Stats())
	}
	if _, err := r.Join("g1", "b"); err != nil {
		t.Fatalf("join of an existing group: %v", err)
	}
	r.Leave("g2", "a")
	if _, err := r.Join("g3", "b"); err != nil {
		t.Fatalf("join after a group emptied: %v", err)
	}
	if n := r.SendGroup("g2", "t", []byte(`{}`)); n != 0 {
		t.Fatalf("sending to a group does not create it; it reached %d", n)
	}
}
