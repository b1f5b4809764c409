package hub

import (
	"context"
	"errors"
	"fmt"
)

// maxTelemetry is IoT Hub's device-to-cloud message limit over MQTT
// (reference §3). The hub closes the connection of a device that sends more,
// so a too-large message is refused here instead.
const maxTelemetry = 256 << 10

// SendTelemetry sends a device-to-cloud message at QoS 1 and waits for the
// hub's acknowledgement. props become the message's properties: "$.ct"
// (content type) and "$.ce" (content encoding) are system properties, the
// rest application properties. A message cut off by a lost connection is
// sent again on the next one, so it arrives at least once.
func (c *Client) SendTelemetry(ctx context.Context, body []byte, props map[string]string) error {
	if len(body) > maxTelemetry {
		return fmt.Errorf("send telemetry: the message is %d bytes, IoT Hub takes at most %d; split it", len(body), maxTelemetry)
	}
	topic, err := telemetryTopic(c.opts.DeviceID, props)
	if err != nil {
		return fmt.Errorf("send telemetry: %w", err)
	}
	for {
		cn, err := c.waitConnected(ctx)
		if err != nil {
			return fmt.Errorf("send telemetry: %w", err)
		}
		tok := cn.client.Publish(topic, 1, false, body)
		err = waitOn(ctx, cn, tok)
		if err != nil && !errors.Is(err, errConnectionLost) && ctx.Err() == nil {
			err = c.publishFailed(ctx, cn, err)
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errConnectionLost):
			c.log.Debug("telemetry cut off by a lost connection; sending again once reconnected")
			continue
		default:
			return fmt.Errorf("send telemetry: %w", err)
		}
	}
}
