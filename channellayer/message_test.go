package channellayer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldhq/herald/channellayer"
)

func TestParseMessage(t *testing.T) {
	good := []string{
		`{"type":"name.gossip"}`,
		` {"type":"x","nested":{"type":5}} `,
		`{"a":[1,2,{"b":null}],"type":"t"}`,
	}
	for _, s := range good {
		m, err := channellayer.ParseMessage([]byte(s))
		if err != nil || !m.Valid() {
			t.Errorf("ParseMessage(%s): %v", s, err)
		}
	}
	bad := []string{``, `null`, `[]`, `"type"`, `{}`, `{"type":1}`, `{"type":""}`, `{"type":null}`,
		`{"type":"x"`, `{"type":"x"} trailing`, "{\"type\":\"\xff\"}", `{"type":"x"}{"type":"y"}`}
	for _, s := range bad {
		if _, err := channellayer.ParseMessage([]byte(s)); !errors.Is(err, channellayer.ErrInvalidMessage) {
			t.Errorf("ParseMessage(%q): %v, want ErrInvalidMessage", s, err)
		}
	}
	if _, err := channellayer.NewMessage(map[string]any{"no": "type"}); !errors.Is(err, channellayer.ErrInvalidMessage) {
		t.Errorf("NewMessage without type: %v", err)
	}
	if _, err := channellayer.NewMessage(func() {}); !errors.Is(err, channellayer.ErrInvalidMessage) {
		t.Errorf("NewMessage of a func: %v", err)
	}
}

// FuzzParseMessage: whatever the bytes (an API body, a Redis payload),
// ParseMessage must not panic, and what it accepts must be a valid UTF-8
// JSON object whose "type" is the string it reports.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{`{"type":"name.gossip","event":"New Post","sender":"a","message":"m","id":1}`,
		`{"type":"x"}`, `{"type":1}`, `[1]`, `{"type":"\u00e9"}`, `{"type":"a","type":"b"}`, "{\"type\":\"\xc3\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := channellayer.ParseMessage(bytes.Clone(data))
		if err != nil {
			if !errors.Is(err, channellayer.ErrInvalidMessage) {
				t.Fatalf("error not wrapping ErrInvalidMessage: %v", err)
			}
			return
		}
		if !utf8.Valid(m.Bytes()) {
			t.Fatal("accepted invalid UTF-8")
		}
		var obj map[string]any
		if err := json.Unmarshal(m.Bytes(), &obj); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", m.Bytes(), err)
		}
		if typ, _ := obj["type"].(string); typ != m.Type() || typ == "" {
			t.Fatalf("Type() = %q, object says %q", m.Type(), typ)
		}
	})
}

func FuzzValidGroupName(f *testing.F) {
	for _, s := range []string{"gossip", "a.b-c_d", "", "a b", "é", "a!b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := channellayer.ValidGroupName(name)
		ok := len(name) > 0 && len(name) < 100
		for _, c := range []byte(name) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				ok = false
			}
		}
		if ok != (err == nil) {
			t.Fatalf("ValidGroupName(%q) = %v, rule says valid=%v", name, err, ok)
		}
	})
}

// FuzzParseID: a history id from a client (?since=, Last-Event-ID, a
// resume frame) either fails or is one that prints back to itself.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0-0", "1795650088435-1", "-", "1-", "-1", "18446744073709551615-18446744073709551615",
		"18446744073709551616-0", "01-1", "1-1-1", "+1-1", " 1-1", "", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := channellayer.ParseID(s)
		if err != nil {
			return
		}
		again, err := channellayer.ParseID(id.String())
		if err != nil || again != id {
			t.Fatalf("%q parsed to %v, which prints as %q and parses to %v (%v)", s, id, id.String(), again, err)
		}
	})
}

func TestFrameWithID(t *testing.T) {
	msg, err := channellayer.ParseMessage([]byte(`{"type":"t","n":{"a":[1]}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := string(channellayer.FrameWithID(msg.Bytes(), "17-2", "orders.eu"))
	if want := `{"type":"t","n":{"a":[1]},"herald_id":"17-2","herald_group":"orders.eu"}`; got != want {
		t.Fatalf("frame %s, want %s", got, want)
	}
	if _, err := channellayer.ParseMessage([]byte(got)); err != nil {
		t.Fatalf("frame is not a valid message: %v", err)
	}
}

// TestParseMessageQuotesTheCharacter: a message that is not JSON is told
// the character where it fails, whole, and the byte; one cut short is
// told so, in words rather than "EOF".
func TestParseMessageQuotesTheCharacter(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"x", é}`:                `unexpected 'é' at byte 14`,
		`{"type":é}`:                     `unexpected 'é' at byte 9`,
		`{"type":"x","a":[1,€]}`:         `unexpected '€' at byte 20`,
		`{"type":"x","a":1,}`:            `unexpected '}' at byte 19`,
		`{"type":"x","a":x`:              `unexpected 'x' at byte 17`,
		`{"type":"x","a":"é` + "\x01\"}": `unexpected '\x01' at byte 20`,
		`{"type":`:                       `ends before the object does`,
		`{"type":"x","a":tru`:            `ends before the object does`,
		`{"type":"x"`:                    `ends before the object does`,
	} {
		_, err := channellayer.ParseMessage([]byte(in))
		if !errors.Is(err, channellayer.ErrInvalidMessage) || !strings.Contains(err.Error(), want) || strings.ContainsAny(err.Error(), "Ãâ") {
			t.Errorf("ParseMessage(%q): %v, want it to say %s", in, err, want)
		}
	}
}
