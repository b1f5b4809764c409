package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// GetTwin reads the device twin: the desired and reported properties
// (without their $version, which is returned beside them). A request cut
// off by a lost connection is repeated on the next one, until ctx ends.
func (c *Client) GetTwin(ctx context.Context) (desired, reported map[string]any, desiredVersion, reportedVersion int, err error) {
	for {
		cn, err := c.waitConnected(ctx)
		if err != nil {
			return nil, nil, 0, 0, fmt.Errorf("get twin: %w", err)
		}
		doc, err := c.twinGetOn(ctx, cn)
		if errors.Is(err, errConnectionLost) {
			continue
		}
		if err != nil {
			return nil, nil, 0, 0, fmt.Errorf("get twin: %w", err)
		}
		return doc.desired, doc.reported, doc.desiredVersion, doc.reportedVersion, nil
	}
}

// twinGetOn is one twin GET on cn (reference §2.2): 200 with the twin, or
// an error status.
func (c *Client) twinGetOn(ctx context.Context, cn *connection) (twinDoc, error) {
	in, err := c.roundTrip(ctx, cn, twinGetTopic, nil, filterTwinResponses)
	if err != nil {
		return twinDoc{}, err
	}
	if in.status != 200 {
		return twinDoc{}, parseErrorBody("twin GET", in.status, in.body)
	}
	return parseTwin(in.body)
}

// UpdateReported applies patch to the reported properties as a JSON merge
// patch (a nil value deletes a property) and returns the reported version
// it produced. The patch is idempotent, so one cut off by a lost connection
// is sent again on the next, until ctx ends.
func (c *Client) UpdateReported(ctx context.Context, patch map[string]any) (version int, err error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return 0, fmt.Errorf("update reported properties: encode the patch: %w", err)
	}
	if patch == nil {
		body = []byte("{}")
	}
	for {
		cn, err := c.waitConnected(ctx)
		if err != nil {
			return 0, fmt.Errorf("update reported properties: %w", err)
		}
		in, err := c.roundTrip(ctx, cn, reportedTopic, body, filterTwinResponses)
		if errors.Is(err, errConnectionLost) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("update reported properties: %w", err)
		}
		if in.status < 200 || in.status > 299 {
			return 0, fmt.Errorf("update reported properties: %w", parseErrorBody("reported PATCH", in.status, in.body))
		}
		v, ok, err := in.topic.Version()
		switch {
		case err != nil:
			return 0, fmt.Errorf("update reported properties: %w: %w", ErrBadAnswer, err)
		case !ok:
			return 0, fmt.Errorf("update reported properties: %w: the %d answer has no $version", ErrBadAnswer, in.status)
		case v > maxVersion:
			return 0, fmt.Errorf("update reported properties: %w: $version %d is out of range", ErrBadAnswer, v)
		}
		return int(v), nil
	}
}
