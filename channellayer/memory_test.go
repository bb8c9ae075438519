package channellayer_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	layertest.Run(t, func(t *testing.T) channellayer.Layer {
		l, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{History: layertest.History})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}
