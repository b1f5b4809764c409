package emulator

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Registration is one registration attempt as the admin API lists it.
type Registration struct {
	RegistrationID string     `json:"registration_id"`
	OperationID    string     `json:"operation_id"`
	Status         string     `json:"status"`
	At             time.Time  `json:"at"`
	AssignedHub    *string    `json:"assigned_hub"`
	DeviceID       *string    `json:"device_id"`
	IssuedSerial   *string    `json:"issued_serial"`
	ErrorCode      *int       `json:"error_code"`
	Substatus      *string    `json:"substatus"`
	CompletedAt    *time.Time `json:"completed_at"`
}

// Device is a device identity in a hub, created when DPS assigns it.
type Device struct {
	DeviceID       string
	RegistrationID string
	Hub            string // hub name
	EnrollmentKey  string
	// InitialHub is DPS's memory of the hub it first assigned the device to,
	// for re-provisioning's substatus (reprovisionedToInitialAssignment).
	InitialHub string
	// How the hub authenticates it.
	SymmetricKeys [][]byte            // SAS
	Thumbprints   []string            // self-signed or individual X.509 (SHA-256, upper-case hex)
	CAs           []*x509.Certificate // X.509 group: chains to one of these
	Issued        bool                // certificates from the emulator's PKI are accepted

	Twin      Twin
	Telemetry []TelemetryMessage

	Connected      bool
	ConnectedSince *time.Time
	AuthMethod     string // x509 or sas
	Certificate    *CertificateInfo
	// Revoked is set by the admin API's revoke; DPS clears it when it issues
	// a new certificate.
	Revoked bool
}

// CertificateInfo describes the certificate a device connected with, or was
// last issued.
type CertificateInfo struct {
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

// NewCertificateInfo summarises c.
func NewCertificateInfo(c *x509.Certificate) *CertificateInfo {
	return &CertificateInfo{
		Serial:    strings.ToUpper(c.SerialNumber.Text(16)),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    Thumbprint(c),
	}
}

// Twin is a device twin: desired and reported properties, each carrying its
// $version as IoT Hub does.
type Twin struct {
	Desired         map[string]any
	DesiredVersion  int
	Reported        map[string]any
	ReportedVersion int
}

// NewTwin is an empty twin at version 1, as IoT Hub creates it.
func NewTwin() Twin {
	return Twin{Desired: map[string]any{}, DesiredVersion: 1, Reported: map[string]any{}, ReportedVersion: 1}
}

// JSON renders the twin as IoT Hub's GET returns it.
func (t *Twin) JSON() []byte {
	doc := map[string]any{
		"desired":  withVersion(t.Desired, t.DesiredVersion),
		"reported": withVersion(t.Reported, t.ReportedVersion),
	}
	b, _ := json.Marshal(doc)
	return b
}

func withVersion(props map[string]any, v int) map[string]any {
	out := make(map[string]any, len(props)+1)
	for k, val := range props {
		out[k] = val
	}
	out["$version"] = v
	return out
}

// MergePatch applies a JSON merge patch (RFC 7386: null deletes) to props.
func MergePatch(props map[string]any, patch map[string]any) {
	for k, v := range patch {
		if strings.HasPrefix(k, "$") {
			continue // $version and other metadata are the service's
		}
		if v == nil {
			delete(props, k)
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			cur, ok := props[k].(map[string]any)
			if !ok {
				cur = map[string]any{}
			}
			MergePatch(cur, sub)
			props[k] = cur
			continue
		}
		props[k] = v
	}
}

// TelemetryMessage is a device-to-cloud message as the admin API shows it.
type TelemetryMessage struct {
	At         time.Time         `json:"at"`
	Body       string            `json:"body"`
	Properties map[string]string `json:"properties"`
}

// maxTelemetryKept bounds memory in long runs and fleet simulations.
const maxTelemetryKept = 1000

// State is the service model shared by the DPS and hub front-ends and the admin
// API. One mutex guards it: operations are short and the emulator's throughput
// goal is far below what that allows. The devices, and the enrollments the
// admin API changes, are saved in the data directory when the Emulator opens
// one (registry_store.go, enrollment_store.go); a State made by NewState alone
// keeps them in memory.
type State struct {
	mu            sync.Mutex
	enrollments   map[string]*Enrollment // by Key()
	devices       map[string]*Device     // by device ID (lower case: IDs are case-insensitive)
	registrations []Registration
	regIndex      map[string]int // operation ID -> index in registrations

	// enrollMu orders enrollment changes; enrollStore saves them, nil keeps
	// them in memory only.
	enrollMu    sync.Mutex
	enrollStore *enrollmentStore

	// store saves the device registry; nil keeps it in memory only. changes
	// numbers the changes it saves, and lastChange is each device's latest.
	store      *registryStore
	changes    uint64
	lastChange map[string]uint64 // by key
}

// NewState holds the given enrollments.
func NewState(enrollments []Enrollment) *State {
	s := &State{
		enrollments: map[string]*Enrollment{}, devices: map[string]*Device{}, regIndex: map[string]int{},
		lastChange: map[string]uint64{},
	}
	for i := range enrollments {
		e := enrollments[i]
		s.enrollments[e.Key()] = &e
	}
	return s
}

// Enrollments lists the enrollments, individual ones first, each sorted by ID.
func (s *State) Enrollments() []Enrollment {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Enrollment, 0, len(s.enrollments))
	for _, e := range s.enrollments {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].IsGroup() != out[j].IsGroup() {
			return !out[i].IsGroup()
		}
		return out[i].Key() < out[j].Key()
	})
	return out
}

// Enrollment returns the enrollment with the given key.
func (s *State) Enrollment(key string) (Enrollment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.enrollments[key]
	if !ok {
		return Enrollment{}, false
	}
	return *e, true
}

// Errors of the enrollment changes.
var (
	ErrEnrollmentExists = errors.New("already enrolled")
	ErrNoEnrollment     = errors.New("no such enrollment")
)

// PutEnrollment adds or replaces an enrollment.
func (s *State) PutEnrollment(e Enrollment) error {
	return s.changeEnrollment(e.Key(), func(*Enrollment) (*Enrollment, error) { return &e, nil })
}

// CreateEnrollment adds an enrollment; ErrEnrollmentExists if its key is
// taken.
func (s *State) CreateEnrollment(e Enrollment) error {
	return s.changeEnrollment(e.Key(), func(cur *Enrollment) (*Enrollment, error) {
		if cur != nil {
			return nil, fmt.Errorf("%s: %w", e.Key(), ErrEnrollmentExists)
		}
		return &e, nil
	})
}

// UpdateEnrollment changes the enrollment stored under key with update,
// which must keep its key; an error from update leaves it as it was.
func (s *State) UpdateEnrollment(key string, update func(*Enrollment) error) (Enrollment, error) {
	var out Enrollment
	err := s.changeEnrollment(key, func(cur *Enrollment) (*Enrollment, error) {
		if cur == nil {
			return nil, fmt.Errorf("%s: %w", key, ErrNoEnrollment)
		}
		next := cur.clone()
		if err := update(&next); err != nil {
			return nil, err
		}
		if next.Key() != key {
			return nil, fmt.Errorf("%s cannot become %s", key, next.Key())
		}
		out = next
		return &next, nil
	})
	return out, err
}

// DeleteEnrollment removes an enrollment; it reports whether it existed.
func (s *State) DeleteEnrollment(key string) (bool, error) {
	existed := false
	err := s.changeEnrollment(key, func(cur *Enrollment) (*Enrollment, error) {
		existed = cur != nil
		return nil, nil
	})
	return existed && err == nil, err
}

// changeEnrollment replaces the enrollment stored under key (cur, nil if
// none) with what change returns, nil to delete it. The result is saved
// before it is made, where the State has a data directory: a change that
// cannot be saved is not made. Changes are ordered by enrollMu.
func (s *State) changeEnrollment(key string, change func(cur *Enrollment) (*Enrollment, error)) error {
	s.enrollMu.Lock()
	defer s.enrollMu.Unlock()
	var cur *Enrollment
	if e, ok := s.Enrollment(key); ok {
		cur = &e
	}
	next, err := change(cur)
	switch {
	case err != nil:
		return err
	case cur == nil && next == nil:
		return nil
	case next != nil:
		next.defaults()
	}
	if err := s.enrollStore.save(key, next); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if next == nil {
		delete(s.enrollments, key)
	} else {
		s.enrollments[key] = next
	}
	return nil
}

// IndividualEnrollment returns the individual enrollment of a registration ID.
func (s *State) IndividualEnrollment(registrationID string) (Enrollment, bool) {
	return s.Enrollment("registration:" + strings.ToLower(registrationID))
}

// Groups lists the enrollment groups with the given attestation type.
func (s *State) Groups(attestation string) []Enrollment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Enrollment
	for _, e := range s.enrollments {
		if e.IsGroup() && e.Attestation.Type == attestation {
			out = append(out, *e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GroupID < out[j].GroupID })
	return out
}

// AddRegistration records the start of a registration operation.
func (s *State) AddRegistration(r Registration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.regIndex[r.OperationID] = len(s.registrations)
	s.registrations = append(s.registrations, r)
}

// UpdateRegistration changes the record of an operation.
func (s *State) UpdateRegistration(operationID string, update func(*Registration)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.regIndex[operationID]; ok {
		update(&s.registrations[i])
	}
}

// Registrations lists every registration attempt, oldest first.
func (s *State) Registrations() []Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Registration(nil), s.registrations...)
}

// HubLoad counts the devices assigned to each hub, for even allocation.
func (s *State) HubLoad() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	load := map[string]int{}
	for _, d := range s.devices {
		load[d.Hub]++
	}
	return load
}

// WithDevice runs fn on the device under the state's lock. fn must not block.
// What fn changes is not saved in the device registry: it is for reads and for
// what a restart ends anyway (connection state, telemetry); updateDevice saves.
func (s *State) WithDevice(deviceID string, fn func(*Device)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[strings.ToLower(deviceID)]
	if ok {
		fn(d)
	}
	return ok
}

// Device returns a copy of a device's summary fields (not its twin maps or
// telemetry, which WithDevice reads under the lock).
func (s *State) Device(deviceID string) (Device, bool) {
	var out Device
	ok := s.WithDevice(deviceID, func(d *Device) { out = *d })
	return out, ok
}

// Devices lists the device IDs, sorted.
func (s *State) Devices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.devices))
	for _, d := range s.devices {
		ids = append(ids, d.DeviceID)
	}
	sort.Strings(ids)
	return ids
}

// AssignDevice creates or updates the device DPS assigned and saves it in the
// device registry. It returns the previous hub ("" for a new device). A reset
// replaces the twin; a migration keeps it. A failure to save is logged, and
// the device stays in memory; DPS, which can report it, uses assign and save.
func (s *State) AssignDevice(d Device, resetTwin bool) (previousHub string) {
	previousHub, seq := s.assign(d, resetTwin)
	_ = s.save(strings.ToLower(d.DeviceID), seq) // a failure is logged by the store
	return previousHub
}

// assign is AssignDevice in memory; it returns the change for save.
func (s *State) assign(d Device, resetTwin bool) (previousHub string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(d.DeviceID)
	if old, ok := s.devices[key]; ok {
		previousHub = old.Hub
		if !resetTwin {
			d.Twin = old.Twin
		}
		d.Telemetry = old.Telemetry
		d.Connected, d.ConnectedSince, d.AuthMethod = old.Connected, old.ConnectedSince, old.AuthMethod
		if d.Certificate == nil {
			d.Certificate = old.Certificate
		}
		if d.InitialHub == "" {
			d.InitialHub = old.InitialHub
		}
	}
	if d.Twin.Desired == nil {
		d.Twin = NewTwin()
	}
	s.devices[key] = &d
	return previousHub, s.noteLocked(key)
}

// updateDevice runs fn on the device under the state's lock, as WithDevice
// does, then saves the device registry: for changes IoT Hub keeps (twin,
// credentials, revocation). It reports whether the device exists; an error
// means the change is made in memory but not saved.
func (s *State) updateDevice(deviceID string, fn func(*Device)) (bool, error) {
	key := strings.ToLower(deviceID)
	s.mu.Lock()
	d, ok := s.devices[key]
	if !ok {
		s.mu.Unlock()
		return false, nil
	}
	fn(d)
	seq := s.noteLocked(key)
	s.mu.Unlock()
	return true, s.save(key, seq)
}

// String is for logs.
func (d *Device) String() string { return fmt.Sprintf("%s@%s", d.DeviceID, d.Hub) }
