package notifier_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/notifier"
)

func TestMemoryStoreDeliversOnCreate(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	// Nobody listening yet is not an error.
	first, err := store.Create(t.Context(), "ann", "to nobody")
	if err != nil || first.ID != 1 {
		t.Fatalf("Create = %+v, %v", first, err)
	}

	in := join(t, layer)
	p, err := store.Create(t.Context(), " ann ", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != 2 || p.Author != "ann" || p.CreatedAt.IsZero() {
		t.Fatalf("Create returned %+v", p)
	}
	in.expect(t, p)

	if _, err := store.Create(t.Context(), "ann", ""); !errors.Is(err, notifier.ErrInvalidPost) {
		t.Errorf("Create with empty message: %v, want ErrInvalidPost", err)
	}
}

func TestMemoryStoreRecent(t *testing.T) {
	store, err := notifier.NewMemoryStore(channellayer.NewMemory(), "gossip")
	if err != nil {
		t.Fatal(err)
	}
	const n = notifier.MaxRecent + 5
	for i := range n {
		if _, err := store.Create(t.Context(), "ann", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	recent, err := store.Recent(t.Context(), 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != notifier.MaxRecent || recent[0].ID != n || recent[len(recent)-1].ID != n-notifier.MaxRecent+1 {
		t.Fatalf("Recent kept %d posts, ids %d..%d; want %d, newest first",
			len(recent), recent[0].ID, recent[len(recent)-1].ID, notifier.MaxRecent)
	}
	if recent, _ := store.Recent(t.Context(), 3); len(recent) != 3 || recent[2].ID != n-2 {
		t.Errorf("Recent(3) = %+v", recent)
	}
	if recent, _ := store.Recent(t.Context(), -1); len(recent) != 0 {
		t.Errorf("Recent(-1) = %+v, want none", recent)
	}
}

func TestMemoryStoreLayerError(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "gossip")
	if err != nil {
		t.Fatal(err)
	}
	layer.Close()
	p, err := store.Create(t.Context(), "ann", "lost")
	if !errors.Is(err, channellayer.ErrClosed) || p.ID != 1 {
		t.Fatalf("Create on a closed layer = %+v, %v; want the post and ErrClosed", p, err)
	}
	if _, err := notifier.NewMemoryStore(layer, "bad name"); err == nil {
		t.Error("NewMemoryStore accepted an invalid group name")
	}
}
