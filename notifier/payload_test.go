package notifier

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestDecodePost(t *testing.T) {
	created := time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC)
	for _, tt := range []struct {
		row  string
		want Post
		bad  bool
	}{
		{row: `{"id": 7, "author": "ann", "message": "hi \"there\"", "created_at": "2025-03-04T05:06:07.891011+00:00"}`,
			want: Post{ID: 7, Author: "ann", Message: `hi "there"`, CreatedAt: created}},
		{row: `{"id": 8, "author": "a", "message": "m", "created_at": "2025-03-04T07:06:07.891011+02:00", "extra": [1]}`,
			want: Post{ID: 8, Author: "a", Message: "m", CreatedAt: created}},
		{row: ``, bad: true},
		{row: `null`, bad: true},
		{row: `[]`, bad: true},
		{row: `{}`, bad: true},
		{row: `{"id":8}`, bad: true},
		{row: `{"id":0,"author":"a","message":"m","created_at":"2025-03-04T05:06:07Z"}`, bad: true},
		{row: `{"id":1.5,"author":"a","message":"m","created_at":"2025-03-04T05:06:07Z"}`, bad: true},
		{row: `{"id":"1","author":"a","message":"m","created_at":"2025-03-04T05:06:07Z"}`, bad: true},
		{row: `{"id":1,"author":"a","message":"m"}`, bad: true},
		{row: `{"id":1,"author":"a","message":"m","created_at":"yesterday"}`, bad: true},
		{row: `{"id":1,"author":"a","message":"m","created_at":"2025-03-04T05:06:07Z"} trailing`, bad: true},
	} {
		got, err := decodePost([]byte(tt.row))
		if tt.bad {
			if !errors.Is(err, errBadRow) {
				t.Errorf("decodePost(%q) error = %v, want errBadRow", tt.row, err)
			}
			continue
		}
		if err != nil || got.ID != tt.want.ID || got.Author != tt.want.Author || got.Message != tt.want.Message ||
			!got.CreatedAt.Equal(tt.want.CreatedAt) {
			t.Errorf("decodePost(%q) = %+v, %v; want %+v", tt.row, got, err, tt.want)
		}
	}
}

// FuzzBridgeMessage checks that no logged row, from the trigger or any
// other writer of the log, crashes a bridge, and that what a bridge
// accepts is a valid message of its type.
func FuzzBridgeMessage(f *testing.F) {
	for _, seed := range []string{
		`{"id": 7, "author": "ann", "message": "hi", "created_at": "2025-03-04T05:06:07.891011+00:00"}`,
		`{"id": 1, "type": "x", "total": 12.5, "tags": ["a"], "meta": {"k": null}}`,
		`{"id":1}`, `null`, `[]`, `{`, `"s"`, `{"a":1,"a":2}`, "{\"\xff\":1}",
	} {
		f.Add([]byte(seed))
	}
	posts := PostsBridge("")
	all := Bridge{Table: "orders", Group: "orders", Type: "order.created"}
	some := Bridge{Table: "orders", Group: "orders", Type: "order.created", Fields: map[string]string{"n": "id", "gone": "missing"}}
	f.Fuzz(func(t *testing.T, row []byte) {
		for _, b := range []Bridge{posts, all, some} {
			msg, err := b.message(row)
			if err != nil {
				continue
			}
			if !msg.Valid() || msg.Type() != b.Type {
				t.Fatalf("bridge %s made message %s of type %q", b.Table, msg, msg.Type())
			}
			var v map[string]json.RawMessage
			if err := json.Unmarshal(msg.Bytes(), &v); err != nil {
				t.Fatalf("bridge %s made invalid JSON %s: %v", b.Table, msg, err)
			}
			if b.Fields != nil && len(v) != len(b.Fields)+1 {
				t.Fatalf("bridge %s made %s, want exactly the mapped fields", b.Table, msg)
			}
		}
	})
}
