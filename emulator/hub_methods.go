package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// hubDefaultMethodTimeout is IoT Hub's responseTimeoutInSeconds default.
const hubDefaultMethodTimeout = 30 * time.Second

// hubPendingMethod is a direct method call waiting for its answer.
type hubPendingMethod struct {
	key    string // the device's
	answer chan hubMethodAnswer
}

type hubMethodAnswer struct {
	status  int
	payload json.RawMessage
}

// InvokeMethod calls a direct method on a connected device: it publishes
// $iothub/methods/POST/{method}/?$rid={rid} at QoS 0 ("Method requests are
// QoS 0", IoT Hub direct methods guide) and waits for the device's
// $iothub/methods/res/{status}/?$rid={rid}. A device that is not connected,
// or not subscribed to $iothub/methods/POST/#, gets ErrDeviceNotConnected,
// as IoT Hub answers 404 then.
func (h *hub) InvokeMethod(ctx context.Context, deviceID, method string, payload json.RawMessage, timeout time.Duration) (int, json.RawMessage, error) {
	if err := hubCheckMethodName(method); err != nil {
		return 0, nil, fmt.Errorf("invoke %q on %s: %w", method, deviceID, err)
	}
	if timeout <= 0 {
		timeout = hubDefaultMethodTimeout
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null") // what the device receives for a call without payload
	}
	s := h.session(deviceID)
	if s == nil {
		return 0, nil, fmt.Errorf("invoke %q on %s: %w", method, deviceID, ErrDeviceNotConnected)
	}
	if !s.subscribed(hubFilterMethods) {
		return 0, nil, fmt.Errorf("invoke %q on %s: %w: not subscribed to %s", method, deviceID, ErrDeviceNotConnected, hubFilterMethods)
	}
	rid, wait := h.expectMethodAnswer(s.key)
	defer h.forgetMethod(rid)
	topic := "$iothub/methods/POST/" + method + "/?$rid=" + rid
	if _, err := s.conn.Publish(topic, payload, 0); err != nil {
		return 0, nil, fmt.Errorf("invoke %q on %s: %w: %w", method, deviceID, ErrDeviceNotConnected, err)
	}
	s.log.Info("direct method invoked", zap.String("method", method), zap.String("rid", rid), zap.Duration("timeout", timeout))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-wait:
		s.log.Info("direct method answered", zap.String("method", method), zap.String("rid", rid), zap.Int("status", a.status))
		return a.status, a.payload, nil
	case <-t.C:
		s.log.Info("direct method timed out", zap.String("method", method), zap.String("rid", rid))
		return 0, nil, fmt.Errorf("invoke %q on %s: %w (%s)", method, deviceID, ErrMethodTimeout, timeout)
	case <-s.conn.Done():
		return 0, nil, fmt.Errorf("invoke %q on %s: %w: disconnected before answering", method, deviceID, ErrDeviceNotConnected)
	case <-ctx.Done():
		return 0, nil, fmt.Errorf("invoke %q on %s: %w", method, deviceID, ctx.Err())
	case <-h.ctx.Done():
		return 0, nil, fmt.Errorf("invoke %q on %s: %w: the emulator is closing", method, deviceID, ErrDeviceNotConnected)
	}
}

// hubCheckMethodName refuses names that would not survive as one topic level,
// and the characters IoT Hub's guide excludes.
func hubCheckMethodName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidMethodName)
	}
	if len(name) > 128 {
		return fmt.Errorf("%w: longer than 128 characters", ErrInvalidMethodName)
	}
	for _, c := range name {
		if c <= ' ' || c > '~' || strings.ContainsRune(`/+#?$()<>@,;:\"[]={}`, c) {
			return fmt.Errorf("%w: %q: use printable ASCII without / + # ? $ ( ) < > @ , ; : \\ \" [ ] = { } or spaces", ErrInvalidMethodName, name)
		}
	}
	return nil
}

// expectMethodAnswer allocates a request ID for a call to the device with
// key and returns where its answer will arrive. IoT Hub's request IDs are
// opaque; a counter keeps them short and unique per hub.
func (h *hub) expectMethodAnswer(key string) (string, <-chan hubMethodAnswer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.methodSeq++
	rid := strconv.FormatUint(h.methodSeq, 16)
	p := &hubPendingMethod{key: key, answer: make(chan hubMethodAnswer, 1)}
	h.methods[rid] = p
	return rid, p.answer
}

func (h *hub) forgetMethod(rid string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.methods, rid)
}

// methodAnswered hands a device's answer to the waiting call. It reports
// false for an unknown request ID (a late answer, or another device's).
func (h *hub) methodAnswered(key, rid string, a hubMethodAnswer) bool {
	h.mu.Lock()
	p, ok := h.methods[rid]
	if ok && p.key == key {
		delete(h.methods, rid)
	}
	h.mu.Unlock()
	if !ok || p.key != key {
		return false
	}
	p.answer <- a // buffered, and only one answer is taken
	return true
}

// methodResponse hands the device's answer to the waiting InvokeMethod. The
// payload is JSON by IoT Hub's rules; anything else is passed on as a JSON
// string, so the caller still sees what the device said.
func (s *hubSession) methodResponse(req hubRequest, payload []byte) {
	rid, _, _ := req.query.get("$rid")
	var body json.RawMessage
	switch {
	case len(bytes.TrimSpace(payload)) == 0:
	case json.Valid(payload):
		body = bytes.Clone(payload)
	default:
		s.log.Info("direct method answer is not JSON; passing it on as a string", zap.String("rid", rid))
		body, _ = json.Marshal(string(payload))
	}
	if !s.h.methodAnswered(s.key, rid, hubMethodAnswer{status: req.status, payload: body}) {
		s.log.Info("direct method answer for no pending call (late, or an unknown $rid)", zap.String("rid", rid), zap.Int("status", req.status))
	}
}
