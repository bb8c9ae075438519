package consumer

import (
	"testing"
	"unicode/utf8"
)

// FuzzClientFrame feeds the decoders of client frames whatever bytes a
// client could send in a valid UTF-8 text frame: they must answer with a
// request or an error, never panic.
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"whoami"}`, `{"type":"subscribe","group":"gossip"}`, `{"type":"resume","since":"1-0"}`, `{"type":"resume"}`, `{"type":"unsubscribe","group":1}`,
		`{"type":"subscribe"}`, `{"type":null}`, `[]`, `null`, `"x"`, `{"type":"x","type":"whoami"}`,
		`{"a":` + "[[[[[[[[[[[[[[[[[[[[" + `}`, `{"n":1e999999}`, `{"type":"subscribe","group":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // closed with 1007 before any decoding
		}
		obj, err := decodeObject(data)
		if err != nil {
			return
		}
		r, err := decodeRequest(obj)
		if err != nil {
			return
		}
		switch r.Type {
		case "whoami", "resume":
		case "subscribe", "unsubscribe":
			if r.Group == "" {
				t.Fatalf("%s accepted without a group: %q", r.Type, data)
			}
		default:
			t.Fatalf("accepted unknown type %q", r.Type)
		}
	})
}
