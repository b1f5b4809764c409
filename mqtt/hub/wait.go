package hub

import (
	"context"
	"errors"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/dpsagent/dpsagent/mqtt"
)

var errConnectionLost = errors.New("the connection to the hub was lost")

// waitOn waits for a paho token, ctx, or the end of cn, whichever comes
// first. The end of the connection must be watched too: paho does not
// complete every token when a connection drops (publishes of a persistent
// session stay pending).
func waitOn(ctx context.Context, cn *connection, tok paho.Token) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(cn.ctx, cancel)
	defer stop()
	err := mqtt.WaitToken(ctx, tok)
	if err != nil && cn.ctx.Err() != nil && !errors.Is(err, mqtt.ErrSubscriptionRefused) {
		return errors.Join(errConnectionLost, err)
	}
	return err
}
