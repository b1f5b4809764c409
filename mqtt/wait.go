package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sort"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ErrSubscriptionRefused is wrapped when the server answers a SUBSCRIBE with
// the failure code 0x80 for a filter.
var ErrSubscriptionRefused = errors.New("subscription refused by the server")

// subackFailure is the SUBACK return code for a refused filter (MQTT 3.1.1
// §3.9.3).
const subackFailure = 0x80

// WaitToken waits until token completes or ctx ends, whichever is first, and
// returns the token's error or ctx.Err(). A paho token cannot be cancelled:
// after a ctx error the operation may still complete, and the caller should
// disconnect. A completed subscription with a refused filter returns an error
// wrapping ErrSubscriptionRefused, which paho itself does not report.
func WaitToken(ctx context.Context, token paho.Token) error {
	select {
	case <-token.Done():
	case <-ctx.Done():
		// Prefer a result that is already there over a coin toss.
		select {
		case <-token.Done():
		default:
			return ctx.Err()
		}
	}
	if err := token.Error(); err != nil {
		return err
	}
	if sub, ok := token.(*paho.SubscribeToken); ok {
		return refusedFilters(sub.Result())
	}
	return nil
}

func refusedFilters(granted map[string]byte) error {
	var refused []string
	for filter, code := range granted {
		if code == subackFailure {
			refused = append(refused, filter)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	sort.Strings(refused)
	return fmt.Errorf("%w: %q", ErrSubscriptionRefused, refused)
}
