package router

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestUnknownFieldWording pins the text unknownField reads: the error
// encoding/json's DisallowUnknownFields gives, which has no type.
func TestUnknownFieldWording(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(`{"author":"a","colour":"red"}`))
	dec.DisallowUnknownFields()
	var v struct{ Author string }
	err := dec.Decode(&v)
	if f, ok := unknownField(err); !ok || f != `"colour"` {
		t.Fatalf("unknownField(%v) = %q, %v: encoding/json words the error otherwise now; update unknownField", err, f, ok)
	}
	if got := JSONProblem(err); got != `unknown field "colour"` {
		t.Errorf("jsonProblem: %q", got)
	}
}
