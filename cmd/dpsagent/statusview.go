package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"time"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/store"
)

// statusSchemaVersion is bumped on any incompatible change to statusView:
// scripts rely on its field names and meanings.
const statusSchemaVersion = 1

// statusView is `dpsagent status --json` and the local API's /v1/status:
// snake_case, RFC 3339 UTC times, null when unknown.
type statusView struct {
	SchemaVersion     int               `json:"schema_version"`
	Source            string            `json:"source"` // daemon or state_dir
	IDScope           *string           `json:"id_scope"`
	RegistrationID    string            `json:"registration_id"`
	DeviceID          *string           `json:"device_id"`
	AssignedHub       *string           `json:"assigned_hub"`
	State             agent.State       `json:"state"`
	Connected         bool              `json:"connected"`
	ConnectedSince    *time.Time        `json:"connected_since"`
	Identity          string            `json:"identity"` // x509 or sas
	Certificate       *certificateView  `json:"certificate"`
	NextRenewal       *time.Time        `json:"next_renewal"`
	NextRenewalReason *string           `json:"next_renewal_reason"`
	LastRenewal       *lastRenewalView  `json:"last_renewal"`
	Registration      *registrationView `json:"registration"`
	LastError         *errorView        `json:"last_error"`
}

type certificateView struct {
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	Serial       string    `json:"serial"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	KeyAlgorithm string    `json:"key_algorithm"`
	KeyStorage   string    `json:"key_storage"`
}

type lastRenewalView struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Path   *string   `json:"path"`
}

type registrationView struct {
	At          *time.Time `json:"at"`
	OperationID *string    `json:"operation_id"`
	Status      *string    `json:"status"`
	Substatus   *string    `json:"substatus"`
}

type errorView struct {
	At      time.Time `json:"at"`
	Message string    `json:"message"`
	Hint    *string   `json:"hint"`
	Code    *string   `json:"code"`
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// offlineStatus builds the view from the state directory alone, as it stands
// when the daemon is not running.
func offlineStatus(cfg *Config, m *store.Manifest, now time.Time) statusView {
	v := statusView{
		SchemaVersion: statusSchemaVersion, Source: "state_dir",
		IDScope: optString(cfg.IDScope), RegistrationID: cfg.RegistrationID,
		Identity: cfg.Identity, State: agent.StateUnprovisioned,
	}
	if m.IDScope != "" {
		v.IDScope = optString(m.IDScope)
	}
	if r := m.LastRegistration; r != nil {
		v.Registration = &registrationView{At: optTime(r.At), OperationID: optString(r.OperationID), Status: optString(r.Status), Substatus: optString(r.Substatus)}
	}
	if e := m.LastError; e != nil {
		v.LastError = &errorView{At: e.At.UTC(), Message: e.Message, Hint: optString(e.Hint), Code: optString(e.Code)}
		v.State = agent.StateError
	}
	id := m.Current
	if id == nil {
		return v
	}
	v.State = agent.StateDisconnected
	v.DeviceID, v.AssignedHub = optString(id.DeviceID), optString(id.AssignedHub)
	if id.KeyStorage == store.StorageSAS {
		v.Identity = IdentitySAS
		return v
	}
	v.Identity = IdentityX509
	leaf := storedLeaf(cfg.Advanced.StateDir, id.ChainFile)
	v.Certificate = &certificateView{Serial: id.Serial, NotBefore: id.NotBefore.UTC(), NotAfter: id.NotAfter.UTC(),
		KeyAlgorithm: string(id.KeyAlgorithm), KeyStorage: string(id.KeyStorage)}
	if leaf != nil {
		v.Certificate.Subject, v.Certificate.Issuer = leaf.Subject.String(), leaf.Issuer.String()
		policy, _ := cfg.renewalPolicy()
		d := agent.Schedule(agent.Config{IDScope: cfg.IDScope, RegistrationID: cfg.RegistrationID, Renewal: policy}, leaf, now, buildTime())
		v.NextRenewal, v.NextRenewalReason = optTime(d.At), optString(d.Reason)
	}
	return v
}

// storedLeaf reads the leaf of a stored chain; nil when it cannot.
func storedLeaf(dir, chainFile string) *x509.Certificate {
	data, err := os.ReadFile(filepath.Join(dir, chainFile))
	if err != nil {
		return nil
	}
	chain, err := agent.DecodeChain(data)
	if err != nil {
		return nil
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil
	}
	return leaf
}

// liveStatus overlays what the running daemon knows on the stored view.
func liveStatus(base statusView, s agent.Status) statusView {
	v := base
	v.Source = "daemon"
	v.State, v.Connected, v.ConnectedSince = s.State, s.Connected, optTime(s.ConnectedSince)
	if !s.Connected {
		v.ConnectedSince = nil
	}
	if s.DeviceID != "" {
		v.DeviceID, v.AssignedHub = optString(s.DeviceID), optString(s.AssignedHub)
	}
	if c := s.Certificate; c != nil {
		v.Certificate = &certificateView{Subject: c.Subject, Issuer: c.Issuer, Serial: c.Serial,
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), KeyAlgorithm: c.KeyAlgorithm, KeyStorage: c.KeyStorage}
	}
	if !s.NextRenewal.IsZero() {
		v.NextRenewal, v.NextRenewalReason = optTime(s.NextRenewal), optString(s.NextRenewalReason)
	}
	if r := s.LastRenewal; r != nil {
		v.LastRenewal = &lastRenewalView{At: r.At.UTC(), Result: r.Result, Path: optString(r.Path)}
	}
	v.LastError = nil
	if e := s.LastError; e != nil {
		v.LastError = &errorView{At: e.At.UTC(), Message: e.Message, Hint: optString(e.Hint), Code: optString(e.Code)}
	}
	return v
}
