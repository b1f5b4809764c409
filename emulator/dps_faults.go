package emulator

import (
	"bytes"
	"context"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// Which fault actions make sense where. A fault is consumed only where it
// applies, so a "wrong_key" fault for operation "*" waits for the request
// that carries a CSR instead of being used up by the CONNECT before it.
func dpsConnectFault(action string) bool {
	switch action {
	case ActionDrop, ActionDelay, ActionThrottle, ActionError:
		return true
	}
	return false
}

func dpsAnswerFault(action string) bool {
	return dpsConnectFault(action) || action == ActionMalformedJSON || action == ActionHostile
}

func dpsIssueFault(action string) bool {
	switch action {
	case ActionWrongKey, ActionExpired, ActionWrongCN:
		return true
	}
	return false
}

// matchFault is Faults.MatchActions for DPS: a fault is consumed only by a
// request whose stage (applies) can carry out its action.
func (d *dps) matchFault(device, operation string, applies func(action string) bool) (Fault, bool) {
	return d.e.faults.MatchActions(EndpointDPS, device, operation, applies)
}

// connectFault applies a fault to a CONNECT. Drop, throttle and error all
// refuse with "server unavailable", the refusal SDKs retry; a delay holds
// the CONNACK back.
func (d *dps) connectFault(ctx context.Context, registrationID string, log *zap.Logger) (mqttsrv.ConnackCode, bool) {
	f, ok := d.matchFault(registrationID, OpConnect, dpsConnectFault)
	if !ok {
		return 0, false
	}
	log.Info("injected fault at CONNECT", zap.Int("fault", f.ID), zap.String("action", f.Action))
	if f.Action == ActionDelay && d.sleep(ctx, f.DelayDuration()) {
		return 0, false
	}
	return mqttsrv.RefusedServerUnavailable, true
}

// dpsFaultError is the answer to a throttle or error fault. Validate has
// set Status (429 for throttle, 500 by default for error).
func dpsFaultError(f Fault) *dpsError {
	e := newDPSError(f.Status*1000+1, "Injected fault %d: the service answers %d.", f.ID, f.Status)
	if f.Action == ActionThrottle {
		e = newDPSError(dpsCodeThrottled, "Operations are being throttled (injected fault %d).", f.ID)
	}
	e.retryAfter = f.RetryAfter
	return e
}

// dpsMalformedJSON cuts a JSON object short: a strict prefix of an object
// is never JSON, and it still looks like the answer the device expected.
func dpsMalformedJSON(body []byte) []byte {
	if len(body) < 2 {
		return []byte("{")
	}
	return bytes.Clone(body[:len(body)/2])
}

// dpsHostileSize keeps hostile answers just under DPS's 96 KB message limit
// ([DOC-DPS-LIMITS]), leaving room for the topic and the MQTT header.
const dpsHostileSize = dpsMaxPacket - 1024

// dpsHostileDepth nests arrays twice as deep as Go's encoding/json accepts:
// a client must bound its parser, not trust the service.
const dpsHostileDepth = 20000

// dpsHostileJSON is the true answer (a JSON object) with a "hostile" member
// added: arrays nested dpsHostileDepth deep, then a string that pads the
// whole to size bytes. It is valid JSON, just unkind.
func dpsHostileJSON(body []byte, size int) []byte {
	body = bytes.TrimSpace(body)
	if len(body) < 2 || body[len(body)-1] != '}' {
		body = []byte("{}")
	}
	var b bytes.Buffer
	b.Grow(size)
	b.Write(body[:len(body)-1])
	if len(body) > 2 {
		b.WriteByte(',')
	}
	b.WriteString(`"hostile":{"nested":`)
	depth := min(dpsHostileDepth, max(0, (size-b.Len()-64)/2))
	b.Write(bytes.Repeat([]byte("["), depth))
	b.Write(bytes.Repeat([]byte("]"), depth))
	b.WriteString(`,"padding":"`)
	if pad := size - b.Len() - len(`"}}`); pad > 0 {
		b.Write(bytes.Repeat([]byte("A"), pad))
	}
	b.WriteString(`"}}`)
	return b.Bytes()
}
