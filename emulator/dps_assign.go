package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// startOperation records a registration and completes it after assignDelay,
// in the background: the device learns the outcome by polling.
func (d *dps) startOperation(op *dpsOperation) {
	d.mu.Lock()
	d.ops.add(op, d.operationTTL)
	d.mu.Unlock()
	d.e.state.AddRegistration(Registration{
		RegistrationID: op.registrationID, OperationID: op.id, Status: dpsStatusAssigning, At: op.created,
	})
	d.spawn(func() {
		if d.sleep(d.ctx, d.assignDelay) {
			d.complete(op)
		}
	})
}

// dpsAssignment is the outcome of a successful assignment.
type dpsAssignment struct {
	hub       HubConfig
	deviceID  string
	substatus string
	chain     [][]byte // issued chain, leaf first; nil without a CSR
	leaf      *x509.Certificate
}

// complete settles an operation: assigned, failed, or disabled; what polls
// answer from then on.
func (d *dps) complete(op *dpsOperation) {
	now := d.e.now()
	log := d.log.With(zap.String("registration_id", op.registrationID), zap.String("operation_id", op.id))
	state := dpsRegistrationResult{
		RegistrationID: op.registrationID, CreatedDateTimeUTC: dpsTime(op.created),
		LastUpdatedDateTimeUTC: dpsTime(now), ETag: dpsETag(),
	}
	dpsAttestationResult(&state, op.identity)
	update := func(r *Registration) { r.CompletedAt = &now }
	if !op.enrollment.IsEnabled() {
		state.Status, state.ErrorCode = dpsStatusDisabled, dpsCodeDisabled
		state.ErrorMessage = fmt.Sprintf("The enrollment of registration ID %q (%s) is disabled.", op.registrationID, op.enrollment.Key())
		log.Warn("registration refused: the enrollment is disabled", zap.String("enrollment", op.enrollment.Key()))
	} else if a, err := d.assign(op, now); err != nil {
		state.Status, state.ErrorCode, state.ErrorMessage = dpsStatusFailed, dpsCodeInternal, err.Error()
		log.Error("assignment failed", zap.Error(err))
	} else {
		state.Status, state.Substatus = dpsStatusAssigned, a.substatus
		state.AssignedHub, state.DeviceID, state.Payload = a.hub.Host, a.deviceID, op.payload
		state.IssuedCertificateChain = dpsChainStrings(a.chain)
		fields := []zap.Field{zap.String("hub", a.hub.Name), zap.String("assigned_hub", a.hub.Host),
			zap.String("device_id", a.deviceID), zap.String("substatus", a.substatus)}
		update = func(r *Registration) {
			r.CompletedAt, r.AssignedHub, r.DeviceID, r.Substatus = &now, &a.hub.Host, &a.deviceID, &a.substatus
			if a.leaf != nil {
				serial := NewCertificateInfo(a.leaf).Serial
				r.IssuedSerial = &serial
			}
		}
		if a.leaf != nil {
			info := NewCertificateInfo(a.leaf)
			fields = append(fields, zap.String("issued_serial", info.Serial), logDate("issued_not_after", info.NotAfter))
		}
		log.Info("device assigned", fields...)
	}
	result := dpsOperationStatus{OperationID: op.id, Status: state.Status, RegistrationState: &state}
	body := dpsJSON(result)
	d.mu.Lock()
	op.done, op.result, op.body = true, result, body
	d.mu.Unlock()
	d.e.state.UpdateRegistration(op.id, func(r *Registration) {
		r.Status = state.Status
		if state.ErrorCode != 0 {
			r.ErrorCode = &state.ErrorCode
		}
		update(r)
	})
}

// dpsAttestationResult fills in the attestation part of the result.
func dpsAttestationResult(state *dpsRegistrationResult, id dpsIdentity) {
	switch {
	case id.method == AttestX509:
		state.X509 = &dpsX509Result{EnrollmentGroupID: id.groupID}
	case id.groupID != "":
		state.SymmetricKey = &dpsSymmetricKeyResult{EnrollmentGroupID: id.groupID}
	}
}

// assign issues the certificate, if asked for, then allocates a hub and
// creates or updates the device there.
func (d *dps) assign(op *dpsOperation, now time.Time) (dpsAssignment, error) {
	enr := op.enrollment
	a := dpsAssignment{deviceID: op.registrationID}
	if !enr.IsGroup() {
		a.deviceID = enr.RegistrationID
		if enr.DeviceID != "" {
			a.deviceID = enr.DeviceID
		}
	}
	hubs := d.candidateHubs(enr)
	if len(hubs) == 0 {
		return a, fmt.Errorf("enrollment %s names no configured IoT hub (hubs %v)", enr.Key(), enr.Hubs)
	}
	dev := Device{DeviceID: a.deviceID, RegistrationID: op.registrationID, EnrollmentKey: enr.Key()}
	if err := dpsHubCredentials(&dev, enr, op.registrationID); err != nil {
		return a, err
	}
	if op.csr != nil {
		// Signing happens before the allocation lock: it is the slow part.
		chain, leaf, err := d.issue(op.csr, a.deviceID, op.certFault, now)
		if err != nil {
			return a, err
		}
		a.chain, a.leaf = chain, leaf
		dev.Issued, dev.Certificate = true, NewCertificateInfo(leaf)
	}

	d.assignMu.Lock()
	existing, had := d.e.state.Device(a.deviceID)
	var load map[string]int
	if enr.Allocation == AllocEvenly {
		load = d.e.state.HubLoad()
		if had {
			load[existing.Hub]-- // moving would not relieve its own hub
		}
	}
	allocated := dpsAllocate(enr.Allocation, hubs, op.registrationID, load)
	key := strings.ToLower(a.deviceID)
	first, current := "", ""
	if had {
		// A device saved before iotemu kept its first hub: its current one.
		first = dpsFirstHub(existing.InitialHub, existing.Hub)
		current = existing.Hub
		if _, ok := d.e.cfg.hub(current); !ok {
			current = "" // its hub is gone from the configuration
		}
	}
	target, substatus, resetTwin := dpsReprovision(enr.Reprovision, allocated.Name, had, current, first)
	a.hub, _ = d.e.cfg.hub(target)
	a.substatus = substatus
	dev.Hub, dev.InitialHub = target, dpsFirstHub(first, target)
	previous, seq := d.e.state.assign(dev, resetTwin)
	d.assignMu.Unlock()

	if previous != "" && previous != target {
		if h := d.e.hubs[previous]; h != nil {
			h.Disconnect(a.deviceID, fmt.Errorf("re-provisioned by DPS to hub %s", target))
		}
	}
	// Saved outside assignMu: assignments of other devices need not wait.
	if err := d.e.state.save(key, seq); err != nil {
		return a, fmt.Errorf("device %q is assigned in memory but not saved, so a restart would lose it: %w", a.deviceID, err)
	}
	return a, nil
}

func dpsFirstHub(first, target string) string {
	if first != "" {
		return first
	}
	return target
}

// candidateHubs are the enrollment's hubs, or every configured hub, in the
// order the configuration lists them.
func (d *dps) candidateHubs(enr Enrollment) []HubConfig {
	if len(enr.Hubs) == 0 {
		return d.e.cfg.Hubs
	}
	var hubs []HubConfig
	for _, name := range enr.Hubs {
		if h, ok := d.e.cfg.hub(name); ok {
			hubs = append(hubs, h)
		}
	}
	return hubs
}

// dpsAllocate picks a hub by the enrollment's policy: static takes the
// first, evenly the least loaded (the first of equals), hashed a stable
// hash of the registration ID, so a device lands on the same hub each time.
func dpsAllocate(policy string, hubs []HubConfig, registrationID string, load map[string]int) HubConfig {
	switch policy {
	case AllocStatic:
		return hubs[0]
	case AllocEvenly:
		best := hubs[0]
		for _, h := range hubs[1:] {
			if load[h.Name] < load[best.Name] {
				best = h
			}
		}
		return best
	default:
		h := fnv.New32a()
		h.Write([]byte(strings.ToLower(registrationID))) // IDs are case-insensitive
		return hubs[h.Sum32()%uint32(len(hubs))]
	}
}

// dpsReprovision decides where a registering device goes, the substatus
// that says so ([SPEC] AssignedDeviceSubstatus), and whether its twin starts
// afresh. current is "" for a new device; first is the hub of its first
// assignment. Staying on the same hub is reported as initialAssignment
// unless the twin is reset; moving back to the first hub is
// reprovisionedToInitialAssignment.
func dpsReprovision(policy, allocated string, had bool, current, first string) (hub, substatus string, resetTwin bool) {
	if !had || current == "" {
		return allocated, dpsSubstatusInitial, !had
	}
	if policy == ReproNever {
		return current, dpsSubstatusInitial, false
	}
	reset := policy == ReproReset
	switch {
	case allocated == current && reset:
		return current, dpsSubstatusReset, true
	case allocated == current:
		return current, dpsSubstatusInitial, false
	case allocated == first:
		return allocated, dpsSubstatusReturned, reset
	case reset:
		return allocated, dpsSubstatusReset, true
	default:
		return allocated, dpsSubstatusMigrated, false
	}
}

// dpsHubCredentials gives the device what the hub authenticates it with:
// the enrollment's keys (a group member's derived key), or its X.509
// certificate's thumbprint, or its group's CA.
func dpsHubCredentials(dev *Device, enr Enrollment, registrationID string) error {
	switch enr.Attestation.Type {
	case AttestSymmetricKey:
		if enr.IsGroup() {
			dev.SymmetricKeys = dpsDeviceKeys(enr, registrationID)
		} else {
			dev.SymmetricKeys = enr.symmetricKeys()
		}
	case AttestX509:
		certs, err := enr.certificates()
		if err != nil {
			return fmt.Errorf("enrollment %s: %w", enr.Key(), err)
		}
		if enr.IsGroup() {
			dev.CAs = certs
			return nil
		}
		for _, c := range certs {
			dev.Thumbprints = append(dev.Thumbprints, Thumbprint(c))
		}
	}
	return nil
}

// issue signs the device certificate for csr; an injected fault f (nil for
// none) spoils it in the way it names.
func (d *dps) issue(csr *x509.CertificateRequest, deviceID string, f *Fault, now time.Time) ([][]byte, *x509.Certificate, error) {
	opts := pki.IssueOptions{DeviceID: deviceID, Lifetime: time.Duration(d.e.cfg.Certificates.Lifetime)}
	if f != nil {
		switch f.Action {
		case ActionWrongKey:
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, nil, fmt.Errorf("injected fault %d: generate a stranger's key: %w", f.ID, err)
			}
			csr = &x509.CertificateRequest{PublicKey: key.Public()}
		case ActionExpired:
			// Valid for its full lifetime, which ended an hour ago.
			opts.NotBefore = now.Add(-opts.Lifetime - time.Hour)
		case ActionWrongCN:
			opts.DeviceID = "not-" + deviceID
		}
	}
	chain, err := d.e.deviceCA.Issue(csr, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("issue a certificate for device %q: %w", deviceID, err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("issue a certificate for device %q: read it back: %w", deviceID, err)
	}
	return chain, leaf, nil
}

// dpsChainStrings encodes a chain as issuedCertificateChain carries it:
// base64 DER, leaf first, root last (reference §1.5).
func dpsChainStrings(chain [][]byte) []string {
	if len(chain) == 0 {
		return nil
	}
	out := make([]string, len(chain))
	for i, der := range chain {
		out[i] = base64.StdEncoding.EncodeToString(der)
	}
	return out
}
