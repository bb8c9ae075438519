package notifier

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestDecodePayload(t *testing.T) {
	created := time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC)
	for _, tt := range []struct {
		payload string
		want    Post
		whole   bool
		bad     bool
	}{
		{payload: `{"id" : 7, "author" : "ann", "message" : "hi \"there\"", "created_at" : "2025-03-04T05:06:07.891011Z"}`,
			want: Post{ID: 7, Author: "ann", Message: `hi "there"`, CreatedAt: created}, whole: true},
		{payload: `{"id" : 8}`, want: Post{ID: 8}},
		{payload: `{"id":9,"extra":true}`, want: Post{ID: 9}},
		{payload: ``, bad: true},
		{payload: `null`, bad: true},
		{payload: `[]`, bad: true},
		{payload: `{}`, bad: true},
		{payload: `{"id":0}`, bad: true},
		{payload: `{"id":-3}`, bad: true},
		{payload: `{"id":1.5}`, bad: true},
		{payload: `{"id":"1"}`, bad: true},
		{payload: `{"id":99999999999999999999}`, bad: true},
		{payload: `{"id":1,"author":"a","message":"m"}`, bad: true},
		{payload: `{"id":1,"author":"a","message":"m","created_at":"yesterday"}`, bad: true},
		{payload: `{"id":1} trailing`, bad: true},
	} {
		got, whole, err := decodePayload(tt.payload)
		if tt.bad {
			if !errors.Is(err, errBadPayload) {
				t.Errorf("decodePayload(%q) error = %v, want errBadPayload", tt.payload, err)
			}
			continue
		}
		if err != nil || whole != tt.whole || got != tt.want {
			t.Errorf("decodePayload(%q) = %+v, %v, %v; want %+v, %v, nil", tt.payload, got, whole, err, tt.want, tt.whole)
		}
	}
}

// FuzzDecodePayload checks that no payload, from the trigger or any other
// writer, crashes the decoder, and that what it accepts is usable. The
// seed corpus is in testdata/fuzz/FuzzDecodePayload.
func FuzzDecodePayload(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		p, whole, err := decodePayload(s)
		if err != nil {
			if !errors.Is(err, errBadPayload) {
				t.Fatalf("error %v does not wrap errBadPayload", err)
			}
			return
		}
		if p.ID <= 0 {
			t.Fatalf("accepted id %d", p.ID)
		}
		if !whole {
			if p != (Post{ID: p.ID}) {
				t.Fatalf("id-only payload gave %+v", p)
			}
			return
		}
		// A whole post survives a round trip and makes a valid message.
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		again, whole2, err := decodePayload(string(data))
		if err != nil || !whole2 || again.ID != p.ID || again.Author != p.Author ||
			again.Message != p.Message || !again.CreatedAt.Equal(p.CreatedAt) {
			t.Fatalf("round trip of %+v gave %+v, %v, %v", p, again, whole2, err)
		}
		if _, err := GossipMessage(p); err != nil {
			t.Fatalf("GossipMessage(%+v): %v", p, err)
		}
	})
}
