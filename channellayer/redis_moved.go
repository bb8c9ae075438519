package channellayer

import (
	"errors"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// movedTo returns the slot and the new owner that a MOVED error reply
// names. go-redis recognizes the reply and gives its address
// (redis.IsMovedError) but not its slot, so the slot is read from the
// reply's text, which is Redis' own wire format ("MOVED <slot>
// <host:port>", in the Redis Cluster specification), and only here;
// TestMovedTo fails against a real cluster if either changes.
func movedTo(err error) (slot int, addr string, ok bool) {
	var reply redis.Error
	if addr, ok = redis.IsMovedError(err); !ok || !errors.As(err, &reply) {
		return 0, "", false
	}
	f := strings.Fields(reply.Error())
	if len(f) != 3 || f[0] != "MOVED" {
		return 0, "", false
	}
	slot, perr := strconv.Atoi(f[1])
	if perr != nil || slot < 0 || slot >= slotCount {
		return 0, "", false
	}
	return slot, addr, true
}
