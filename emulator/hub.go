package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// hub is an IoT Hub front-end. PLACEHOLDER: being written; refuses every connection.
type hub struct {
	e   *Emulator
	cfg HubConfig
}

func newHub(e *Emulator, cfg HubConfig) *hub { return &hub{e: e, cfg: cfg} }

func (h *hub) Connect(context.Context, *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	return nil, mqttsrv.RefusedServerUnavailable
}

func (h *hub) close() {}

// Errors the admin API maps to IoT Hub's status codes.
var (
	ErrDeviceNotConnected = errors.New("device is not connected")
	ErrMethodTimeout      = errors.New("device did not answer the method in time")
)

// InvokeMethod calls a direct method on a connected device.
func (h *hub) InvokeMethod(ctx context.Context, deviceID, method string, payload json.RawMessage, timeout time.Duration) (int, json.RawMessage, error) {
	return 0, nil, ErrDeviceNotConnected
}

// PushDesired sends the device its desired-property patch if it is connected.
func (h *hub) PushDesired(deviceID string, patch map[string]any, version int) {}

// Disconnect closes the device's connection, if any.
func (h *hub) Disconnect(deviceID string, reason error) {}
