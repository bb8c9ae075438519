package consumer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/heraldhq/herald/channellayer"
)

// position is where a client is in one group's history: the history id
// of the last message of the group it has. An empty group is the route's
// default group.
type position struct {
	group, id string
}

// maxPositions caps the entries of one position list, well above
// Server.MaxGroups' default, so that parsing a hostile list stays cheap.
const maxPositions = 1000

// parsePositions reads a client's resume positions, as the "since" query
// parameter, the Last-Event-ID header and the resume frame give them:
// comma-separated entries, each a bare history id (the route's default
// group) or group:id. Group names hold no ':' or ','. An empty s is no
// position. Every id must be a history id, every group a valid group
// name, and no group may appear twice.
func parsePositions(s string) ([]position, error) {
	if s == "" {
		return nil, nil
	}
	if n := strings.Count(s, ",") + 1; n > maxPositions {
		return nil, fmt.Errorf("%d positions, at most %d", n, maxPositions)
	}
	var ps []position
	for entry := range strings.SplitSeq(s, ",") {
		group, id, named := strings.Cut(entry, ":")
		if !named {
			group, id = "", entry
		} else if err := channellayer.ValidGroupName(group); err != nil {
			return nil, err
		}
		if _, err := channellayer.ParseID(id); err != nil {
			return nil, fmt.Errorf("position %q: %w", entry, err)
		}
		for _, p := range ps {
			if p.group == group {
				if group == "" {
					return nil, errors.New("two positions without a group")
				}
				return nil, fmt.Errorf("two positions for group %q", group)
			}
		}
		ps = append(ps, position{group: group, id: id})
	}
	return ps, nil
}

// appendPositions appends ps in the form parsePositions reads.
func appendPositions(b []byte, ps []position) []byte {
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		if p.group != "" {
			b = append(b, p.group...)
			b = append(b, ':')
		}
		b = append(b, p.id...)
	}
	return b
}
