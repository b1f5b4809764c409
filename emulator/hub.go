package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// hub is one IoT Hub's device endpoint: MQTT 3.1.1 with SAS or X.509
// authentication, telemetry, the device twin, direct methods and the
// credential API (issueCertificate), as reference §2 describes them. Devices
// exist in the State once DPS has assigned them, and across restarts
// (registry_store.go); the hub serves only those assigned to it.
//
// Files: hub_connect.go authenticates a CONNECT, hub_session.go runs an
// accepted connection, hub_twin.go and hub_methods.go serve the twin and
// direct methods, c2d.go and c2d_queue.go cloud-to-device messages,
// hub_credentials.go the credential API, hub_topics.go parses
// topics and user names, hub_replies.go shapes error answers.
type hub struct {
	e   *Emulator
	cfg HubConfig
	log *zap.Logger
	// conflictCode is the credential API's answer to a second request while
	// one is active: 409005 in the newest SDK sources, 409004 in Microsoft's
	// January 2026 service test log (reference §2.3 error table).
	conflictCode int

	// conns enforces one connection per device; keys are lower-case device
	// IDs, as the State's are (IDs are case-insensitive there).
	conns mqttsrv.Registry

	// ctx ends background work (SAS expiry, delayed answers, credential
	// operations) when the emulator closes; wg waits for it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// closed stops new background work once close has begun, so wg.Add never
	// races with wg.Wait.
	closed bool
	// sessions is the current session of each connected device.
	sessions map[string]*hubSession
	// persisted holds the subscriptions of devices that connected with
	// CleanSession 0, across their connections.
	persisted map[string]map[string]byte
	// c2d is each device's cloud-to-device queue (c2d_queue.go), by key; a
	// queue outlives the device's connections.
	c2d map[string]*c2dQueue
	// credentialOps is the active issueCertificate operation of each device.
	credentialOps map[string]*hubCredentialOp
	// methods are the direct method calls waiting for the device's answer,
	// by request ID.
	methods   map[string]*hubPendingMethod
	methodSeq uint64
}

func newHub(e *Emulator, cfg HubConfig) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	return &hub{
		e: e, cfg: cfg,
		log:          e.log.Named("hub").With(zap.String("hub", cfg.Name)),
		conflictCode: hubErrConflictDefault,
		ctx:          ctx, cancel: cancel,
		sessions:      map[string]*hubSession{},
		persisted:     map[string]map[string]byte{},
		c2d:           map[string]*c2dQueue{},
		credentialOps: map[string]*hubCredentialOp{},
		methods:       map[string]*hubPendingMethod{},
	}
}

// close stops the hub's background work and waits for it. The MQTT server is
// closed first (Emulator.Close), so no session starts new work meanwhile.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// background runs fn on its own goroutine unless the hub is closing; fn must
// return once h.ctx is done.
func (h *hub) background(fn func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

// sleep waits for d, or until ctx or the hub ends; it reports whether the
// whole time passed.
func (h *hub) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-h.ctx.Done():
	}
	return false
}

func hubKey(deviceID string) string { return strings.ToLower(deviceID) }

// session returns the device's current session, nil when it is not connected.
func (h *hub) session(deviceID string) *hubSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[hubKey(deviceID)]
}

// Errors the admin API maps to IoT Hub's status codes.
var (
	ErrDeviceNotConnected = errors.New("device is not connected")
	ErrMethodTimeout      = errors.New("device did not answer the method in time")
	// ErrInvalidMethodName: the name cannot be a topic level of
	// $iothub/methods/POST/{method name}/ (the admin API answers 400).
	ErrInvalidMethodName = errors.New("invalid direct method name")
)

// PushDesired sends the device its desired-property patch if it is connected
// and subscribed to $iothub/twin/PATCH/properties/desired/#: the topic
// carries ?$version={n} and the body is the patch with "$version" (reference
// §2.2). Disconnected devices get nothing; they GET the twin on reconnecting.
func (h *hub) PushDesired(deviceID string, patch map[string]any, version int) {
	s := h.session(deviceID)
	if s == nil || !s.subscribed(hubFilterDesired) {
		h.log.Debug("desired properties not pushed: device not connected or not subscribed",
			zap.String("device_id", deviceID), zap.Int("version", version))
		return
	}
	body, err := json.Marshal(withVersion(patch, version))
	if err != nil {
		s.log.Error("desired properties not pushed: patch is not JSON", zap.Error(err))
		return
	}
	topic := "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.Itoa(version)
	if _, err := s.conn.Publish(topic, body, 0); err != nil {
		s.log.Info("desired properties not pushed", zap.Int("version", version), zap.Error(err))
		return
	}
	s.log.Info("desired properties pushed", zap.Int("version", version))
}

// Disconnect closes the device's connection, if any, for reason (the admin
// API's revoke uses it so the revoked certificate is refused at once).
func (h *hub) Disconnect(deviceID string, reason error) {
	if reason == nil {
		reason = errors.New("disconnected by the emulator")
	}
	if c := h.conns.Lookup(hubKey(deviceID)); c != nil {
		h.log.Info("disconnecting device", zap.String("device_id", deviceID), zap.Error(reason))
		c.Close(reason)
	}
}
