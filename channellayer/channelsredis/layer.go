package channelsredis

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// What channels_redis does not do, both layers answer through the
// channellayer.Layer methods: no group keeps a history, no message is
// sent once for every instance, and idempotency keys are not applied
// (Django processes know nothing of them).

// History implements channellayer.Layer: no group keeps one.
func (l *Core) History(_ context.Context, group, _ string, _ int) ([]channellayer.Message, error) {
	return nil, noHistory(group)
}

// GroupSendOnce implements channellayer.Layer: a Core cannot send once.
func (l *Core) GroupSendOnce(context.Context, string, int64, string, channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendResult{}, errNoOnce
}

// LastSent implements channellayer.Layer: a Core cannot send once.
func (l *Core) LastSent(context.Context, string, string) (int64, bool, error) {
	return 0, false, errNoOnce
}

// KeyWindow implements channellayer.Layer: zero, keys are not applied.
func (l *Core) KeyWindow() time.Duration { return 0 }

// Stats implements channellayer.Layer.
func (l *Core) Stats() channellayer.Stats { return channellayer.Stats{Local: l.reg.Stats()} }

// History implements channellayer.Layer: no group keeps one.
func (l *PubSub) History(_ context.Context, group, _ string, _ int) ([]channellayer.Message, error) {
	return nil, noHistory(group)
}

// GroupSendOnce implements channellayer.Layer: a PubSub cannot send once.
func (l *PubSub) GroupSendOnce(context.Context, string, int64, string, channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendResult{}, errNoOnce
}

// LastSent implements channellayer.Layer: a PubSub cannot send once.
func (l *PubSub) LastSent(context.Context, string, string) (int64, bool, error) {
	return 0, false, errNoOnce
}

// KeyWindow implements channellayer.Layer: zero, keys are not applied.
func (l *PubSub) KeyWindow() time.Duration { return 0 }

// Stats implements channellayer.Layer.
func (l *PubSub) Stats() channellayer.Stats { return channellayer.Stats{Local: l.reg.Stats()} }

var errNoOnce = fmt.Errorf("%w: channels_redis layers cannot send once", channellayer.ErrUnsupported)

func noHistory(group string) error {
	return fmt.Errorf("%w: group %q (channels_redis layers keep none)", channellayer.ErrNoHistory, group)
}
