package notifier_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/notifier"
)

func TestValidatePost(t *testing.T) {
	for _, tt := range []struct {
		name, author, message string
		ok                    bool
	}{
		{"plain", "ann", "hello", true},
		{"trimmed author", "  ann\t", "hello", true},
		{"longest author", strings.Repeat("é", notifier.MaxAuthorLength), "m", true},
		{"longest message", "ann", strings.Repeat("x", notifier.MaxMessageBytes), true},
		{"empty author", "", "m", false},
		{"blank author", " \t\n", "m", false},
		{"long author", strings.Repeat("a", notifier.MaxAuthorLength+1), "m", false},
		{"empty message", "ann", "", false},
		{"long message", "ann", strings.Repeat("é", notifier.MaxMessageBytes/2+1), false},
		{"invalid UTF-8 author", "a\xff", "m", false},
		{"invalid UTF-8 message", "ann", "m\xc3", false},
		{"NUL in author", "a\x00b", "m", false},
		{"NUL in message", "ann", "m\x00", false},
	} {
		err := notifier.ValidatePost(tt.author, tt.message)
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, notifier.ErrInvalidPost) {
			t.Errorf("%s: error %v, want ErrInvalidPost", tt.name, err)
		}
	}
}

func TestGossipMessage(t *testing.T) {
	msg, err := notifier.GossipMessage(notifier.Post{ID: 12, Author: "ann", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"name.gossip","event":"New Post","sender":"ann","message":"hi","id":12}`
	if msg.Type() != "name.gossip" || msg.String() != want {
		t.Errorf("got %s (type %q), want %s", msg, msg.Type(), want)
	}
}
