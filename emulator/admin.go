package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// maxAdminBody bounds what a client can make the admin API read.
const maxAdminBody = 1 << 20

func (e *Emulator) serveAdmin(listen string) (string, error) {
	ls, err := listenAll(listen)
	if err != nil {
		return "", fmt.Errorf("admin API: %w", err)
	}
	srv := &http.Server{Handler: e.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	e.mu.Lock()
	e.admin = srv
	e.mu.Unlock()
	for _, l := range ls {
		e.wg.Add(1)
		go func(l net.Listener) {
			defer e.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("admin API stopped", zap.Error(err))
			}
		}(l)
	}
	return "http://" + ls[0].Addr().String(), nil
}

// adminHandler is the admin API: JSON over HTTP, snake_case, RFC 3339 times.
func (e *Emulator) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/enrollments", e.listEnrollments)
	mux.HandleFunc("POST /api/enrollments", e.createEnrollment)
	mux.HandleFunc("PATCH /api/enrollments/{id}", e.patchEnrollment)
	mux.HandleFunc("DELETE /api/enrollments/{id}", e.deleteEnrollment)
	mux.HandleFunc("GET /api/registrations", e.listRegistrations)
	mux.HandleFunc("GET /api/devices", e.listDevices)
	mux.HandleFunc("GET /api/devices/{id}", e.getDevice)
	mux.HandleFunc("GET /api/devices/{id}/telemetry", e.getTelemetry)
	mux.HandleFunc("GET /api/devices/{id}/twin", e.getTwin)
	mux.HandleFunc("PATCH /api/devices/{id}/twin/desired", e.patchDesired)
	mux.HandleFunc("POST /api/devices/{id}/methods/{name}", e.invokeMethod)
	mux.HandleFunc("POST /api/devices/{id}/c2d", e.sendC2D)
	mux.HandleFunc("GET /api/devices/{id}/c2d", e.listC2D)
	mux.HandleFunc("DELETE /api/devices/{id}/c2d", e.purgeC2D)
	mux.HandleFunc("POST /api/devices/{id}/revoke", e.revokeDevice)
	mux.HandleFunc("GET /api/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, e.faults.List())
	})
	mux.HandleFunc("POST /api/faults", e.addFault)
	mux.HandleFunc("DELETE /api/faults", func(w http.ResponseWriter, _ *http.Request) {
		e.faults.Clear()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// readJSON decodes a request body strictly: unknown fields are mistakes.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: %v", err)
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "request body: one JSON value expected")
		return false
	}
	return true
}

// listRegistrations shows every attempt, oldest first, with UTC times
// whatever the clock's location.
func (e *Emulator) listRegistrations(w http.ResponseWriter, _ *http.Request) {
	regs := e.state.Registrations()
	for i := range regs {
		r := &regs[i]
		r.At = r.At.UTC()
		r.CompletedAt = utcPtr(r.CompletedAt)
	}
	writeJSON(w, http.StatusOK, regs)
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return ptr(t.UTC())
}

func (e *Emulator) hubNames() map[string]bool { return e.cfg.hubNames() }

func (e *Emulator) listEnrollments(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.state.Enrollments())
}

func (e *Emulator) createEnrollment(w http.ResponseWriter, r *http.Request) {
	var en Enrollment
	if !readJSON(w, r, &en) {
		return
	}
	en.defaults()
	if err := en.Validate(e.hubNames()); err != nil {
		writeError(w, http.StatusBadRequest, "enrollment: %v", err)
		return
	}
	err := e.state.CreateEnrollment(en)
	switch {
	case errors.Is(err, ErrEnrollmentExists):
		writeError(w, http.StatusConflict, "%s is already enrolled: PATCH it or DELETE it first", en.Key())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%s not created, as a restart would lose it: %v", en.Key(), err)
		return
	}
	e.log.Info("enrollment created", zap.String("enrollment", en.Key()), zap.String("attestation", en.Attestation.Type))
	writeJSON(w, http.StatusCreated, en)
}

// enrollmentKey finds {id} as an individual enrollment first, then a group.
func (e *Emulator) enrollmentKey(id string) (string, bool) {
	for _, key := range []string{"registration:" + strings.ToLower(id), "group:" + id} {
		if _, ok := e.state.Enrollment(key); ok {
			return key, true
		}
	}
	return "", false
}

func (e *Emulator) patchEnrollment(w http.ResponseWriter, r *http.Request) {
	key, ok := e.enrollmentKey(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no enrollment %q", r.PathValue("id"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	// A merge: the body's fields replace the enrollment's, others stay.
	var invalid error
	en, err := e.state.UpdateEnrollment(key, func(en *Enrollment) error {
		invalid = mergeEnrollment(en, body, key, e.hubNames())
		return invalid
	})
	switch {
	case err != nil && err == invalid:
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	case errors.Is(err, ErrNoEnrollment):
		writeError(w, http.StatusNotFound, "no enrollment %q", r.PathValue("id"))
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%s not changed, as a restart would lose the change: %v", key, err)
		return
	}
	e.log.Info("enrollment updated", zap.String("enrollment", key), zap.Bool("enabled", en.IsEnabled()))
	writeJSON(w, http.StatusOK, en)
}

// mergeEnrollment decodes a PATCH body over en and checks the result.
func mergeEnrollment(en *Enrollment, body []byte, key string, hubs map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(en); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if en.Key() != key {
		return errors.New("an enrollment's registration_id or group_id cannot change")
	}
	if err := en.Validate(hubs); err != nil {
		return fmt.Errorf("enrollment: %w", err)
	}
	return nil
}

func (e *Emulator) deleteEnrollment(w http.ResponseWriter, r *http.Request) {
	key, ok := e.enrollmentKey(r.PathValue("id"))
	if ok {
		var err error
		if ok, err = e.state.DeleteEnrollment(key); err != nil {
			writeError(w, http.StatusInternalServerError, "%s not deleted, as a restart would bring it back: %v", key, err)
			return
		}
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no enrollment %q", r.PathValue("id"))
		return
	}
	e.log.Info("enrollment deleted", zap.String("enrollment", key))
	w.WriteHeader(http.StatusNoContent)
}

// deviceView is a device as GET /api/devices shows it.
type deviceView struct {
	DeviceID       string           `json:"device_id"`
	RegistrationID string           `json:"registration_id"`
	Hub            string           `json:"hub"`
	Connected      bool             `json:"connected"`
	Auth           *string          `json:"auth"`
	ConnectedSince *time.Time       `json:"connected_since"`
	Certificate    *CertificateInfo `json:"certificate"`
	Revoked        bool             `json:"revoked"`
}

func (e *Emulator) view(d Device) deviceView {
	v := deviceView{
		DeviceID: d.DeviceID, RegistrationID: d.RegistrationID, Hub: d.Hub,
		Connected: d.Connected, ConnectedSince: utcPtr(d.ConnectedSince), Certificate: d.Certificate,
		Revoked: d.Revoked,
	}
	if d.AuthMethod != "" {
		v.Auth = ptr(d.AuthMethod)
	}
	return v
}

func (e *Emulator) listDevices(w http.ResponseWriter, _ *http.Request) {
	out := []deviceView{}
	for _, id := range e.state.Devices() {
		if d, ok := e.state.Device(id); ok {
			out = append(out, e.view(d))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) device(w http.ResponseWriter, r *http.Request) (Device, bool) {
	d, ok := e.state.Device(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no device %q: a device exists once DPS has assigned it", r.PathValue("id"))
	}
	return d, ok
}

func (e *Emulator) getDevice(w http.ResponseWriter, r *http.Request) {
	if d, ok := e.device(w, r); ok {
		writeJSON(w, http.StatusOK, e.view(d))
	}
}

func (e *Emulator) getTelemetry(w http.ResponseWriter, r *http.Request) {
	var msgs []TelemetryMessage
	if !e.state.WithDevice(r.PathValue("id"), func(d *Device) { msgs = append([]TelemetryMessage{}, d.Telemetry...) }) {
		writeError(w, http.StatusNotFound, "no device %q", r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, msgs)
}

func (e *Emulator) getTwin(w http.ResponseWriter, r *http.Request) {
	var doc json.RawMessage
	if !e.state.WithDevice(r.PathValue("id"), func(d *Device) { doc = d.Twin.JSON() }) {
		writeError(w, http.StatusNotFound, "no device %q", r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func (e *Emulator) patchDesired(w http.ResponseWriter, r *http.Request) {
	var patch map[string]any
	if !readJSON(w, r, &patch) {
		return
	}
	var (
		version int
		hubName string
		doc     json.RawMessage
	)
	found, err := e.state.updateDevice(r.PathValue("id"), func(d *Device) {
		MergePatch(d.Twin.Desired, patch)
		d.Twin.DesiredVersion++
		version, hubName, doc = d.Twin.DesiredVersion, d.Hub, d.Twin.JSON()
	})
	if !found {
		writeError(w, http.StatusNotFound, "no device %q", r.PathValue("id"))
		return
	}
	// The twin has changed, saved or not: the device learns of it either way.
	if h, ok := e.hubs[hubName]; ok {
		h.PushDesired(r.PathValue("id"), patch, version)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "desired properties changed to $version %d but not saved, so a restart would lose them: %v", version, err)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

type methodRequest struct {
	Payload        json.RawMessage `json:"payload"`
	TimeoutSeconds int             `json:"timeout_seconds"`
}

type methodResponse struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

func (e *Emulator) invokeMethod(w http.ResponseWriter, r *http.Request) {
	d, ok := e.device(w, r)
	if !ok {
		return
	}
	var req methodRequest
	if !readJSON(w, r, &req) {
		return
	}
	timeout := 30 * time.Second // IoT Hub's default response timeout
	if req.TimeoutSeconds != 0 {
		if req.TimeoutSeconds < 5 || req.TimeoutSeconds > 300 {
			writeError(w, http.StatusBadRequest, "timeout_seconds %d: IoT Hub takes 5 to 300", req.TimeoutSeconds)
			return
		}
		timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	if len(req.Payload) == 0 {
		req.Payload = json.RawMessage("null")
	}
	h, ok := e.hubs[d.Hub]
	if !ok {
		writeError(w, http.StatusNotFound, "device %q is on no hub", d.DeviceID)
		return
	}
	status, payload, err := h.InvokeMethod(r.Context(), d.DeviceID, r.PathValue("name"), req.Payload, timeout)
	switch {
	case errors.Is(err, ErrInvalidMethodName):
		writeError(w, http.StatusBadRequest, "method name %q: %v", r.PathValue("name"), err)
	case errors.Is(err, ErrDeviceNotConnected):
		writeError(w, http.StatusNotFound, "device %q is not connected (or not subscribed to direct methods)", d.DeviceID)
	case errors.Is(err, ErrMethodTimeout), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "device %q did not answer %q within %s", d.DeviceID, r.PathValue("name"), timeout)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "invoke %q: %v", r.PathValue("name"), err)
	default:
		if len(payload) == 0 {
			payload = json.RawMessage("null")
		}
		writeJSON(w, http.StatusOK, methodResponse{Status: status, Payload: payload})
	}
}

// sendC2D hands a cloud-to-device message to the device's hub: 200 with the
// delivery once a connected, subscribed device has it; 202 with its place in
// the device's queue when it must wait (not connected, not subscribed, no
// PUBACK yet); 403 when the queue already holds IoT Hub's maximum; 400 for a
// message IoT Hub would refuse.
func (e *Emulator) sendC2D(w http.ResponseWriter, r *http.Request) {
	d, h, ok := e.deviceHub(w, r)
	if !ok {
		return
	}
	var m C2DMessage
	if !readJSON(w, r, &m) {
		return
	}
	outcome, err := h.SendC2D(r.Context(), d.DeviceID, m)
	switch {
	case errors.Is(err, ErrInvalidC2D):
		writeError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, ErrC2DQueueFull):
		writeError(w, http.StatusForbidden, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	case outcome.Delivered != nil:
		writeJSON(w, http.StatusOK, outcome.Delivered)
	default:
		writeJSON(w, http.StatusAccepted, outcome.Queued)
	}
}

// listC2D shows the device's queue: the messages waiting for it and those
// sent but not yet acknowledged, in delivery order.
func (e *Emulator) listC2D(w http.ResponseWriter, r *http.Request) {
	if d, h, ok := e.deviceHub(w, r); ok {
		writeJSON(w, http.StatusOK, h.C2DQueue(d.DeviceID))
	}
}

type c2dPurge struct {
	DeviceID string `json:"device_id"`
	Purged   int    `json:"purged"`
}

// purgeC2D empties the device's queue, as IoT Hub's purge queue API does.
func (e *Emulator) purgeC2D(w http.ResponseWriter, r *http.Request) {
	if d, h, ok := e.deviceHub(w, r); ok {
		writeJSON(w, http.StatusOK, c2dPurge{DeviceID: d.DeviceID, Purged: h.PurgeC2D(d.DeviceID)})
	}
}

// deviceHub finds the device {id} and the hub it is assigned to.
func (e *Emulator) deviceHub(w http.ResponseWriter, r *http.Request) (Device, *hub, bool) {
	d, ok := e.device(w, r)
	if !ok {
		return Device{}, nil, false
	}
	h, ok := e.hubs[d.Hub]
	if !ok {
		writeError(w, http.StatusNotFound, "device %q is on no hub", d.DeviceID)
		return Device{}, nil, false
	}
	return d, h, true
}

func (e *Emulator) revokeDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := e.device(w, r)
	if !ok {
		return
	}
	if err := e.deviceCA.Revoke(d.DeviceID); err != nil {
		writeError(w, http.StatusInternalServerError, "revoke %q: %v", d.DeviceID, err)
		return
	}
	_, saveErr := e.state.updateDevice(d.DeviceID, func(d *Device) { d.Revoked = true })
	if h, ok := e.hubs[d.Hub]; ok {
		// Azure rejects the revoked certificate at the next connection; closing
		// the current one makes that happen now, as a hub restart would.
		h.Disconnect(d.DeviceID, errors.New("certificates revoked"))
	}
	if saveErr != nil {
		// The certificates stay refused (the device PKI saved that); only the
		// registry's revoked flag may be lost in a restart.
		writeError(w, http.StatusInternalServerError, "revoked %q, but the device registry was not saved: %v", d.DeviceID, saveErr)
		return
	}
	e.log.Info("device certificates revoked", zap.String("device", d.DeviceID))
	d, _ = e.state.Device(d.DeviceID)
	writeJSON(w, http.StatusOK, e.view(d))
}

func (e *Emulator) addFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !readJSON(w, r, &f) {
		return
	}
	added, err := e.faults.Add(f)
	if err != nil {
		writeError(w, http.StatusBadRequest, "fault: %v", err)
		return
	}
	e.log.Info("fault injected", zap.String("endpoint", added.Endpoint), zap.String("device", added.Device),
		zap.String("operation", added.Operation), zap.String("action", added.Action))
	writeJSON(w, http.StatusCreated, added)
}
