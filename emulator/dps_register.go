package emulator

import (
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// register answers a register request (reference §1.4): 202 with a new
// operation, or an error answer when the request cannot be carried out.
func (s *dpsSession) register(payload []byte) dpsAnswer {
	now := s.d.e.now()
	op, derr := s.newOperation(payload, now)
	if derr != nil {
		return s.refuse(derr, now)
	}
	s.d.startOperation(op)
	s.log.Info("registration started", zap.String("operation_id", op.id), zap.String("enrollment", op.enrollment.Key()),
		zap.Bool("csr", op.csr != nil), zap.Bool("enrollment_enabled", op.enrollment.IsEnabled()))
	return dpsAnswer{
		status:     202,
		retryAfter: s.d.retryAfter,
		// Without registrationState, as the service's first 202 looks.
		body: dpsJSON(dpsOperationStatus{OperationID: op.id, Status: dpsStatusAssigning}),
	}
}

// newOperation checks a register request: the body, then what the
// api-version allows, then the enrollment, then the CSR, so a malformed
// request is reported as such whatever the enrollment says. A disabled
// enrollment still gets an operation, which ends "disabled", as devices
// see it in the service's answers (status "disabled" after polling).
func (s *dpsSession) newOperation(payload []byte, now time.Time) (*dpsOperation, *dpsError) {
	body, derr := parseDPSRegisterBody(payload)
	if derr != nil {
		return nil, derr
	}
	regID := s.id.registrationID
	if body.RegistrationID != nil && !strings.EqualFold(*body.RegistrationID, regID) {
		return nil, newDPSError(dpsCodeInvalidField,
			"The registrationId in the request body (%q) does not match the registration ID this connection authenticated as (%q).", *body.RegistrationID, regID)
	}
	if body.CSR != nil && !s.id.apiVersion.supportsCSR() {
		return nil, newDPSError(dpsCodeInvalidField,
			"The csr field is not supported by api-version %s; use api-version %s or later.", s.id.apiVersion, dpsCSRVersion)
	}
	enr, ok := s.d.e.state.Enrollment(s.id.enrollmentKey)
	if !ok {
		// Deleted since the device connected.
		return nil, newDPSError(dpsCodeEnrollmentNotFound, "No enrollment was found for registration ID %q.", regID)
	}
	op := &dpsOperation{
		id: dpsOperationID(), registrationID: regID, identity: *s.id, enrollment: enr,
		payload: body.Payload, created: now,
	}
	if body.CSR == nil || !enr.IsEnabled() {
		return op, nil
	}
	if !enr.Issues() {
		return nil, newDPSError(dpsCodeCSRNotConfigured, "Device sent CSR but the enrollment is not configured to issue certificates.")
	}
	csr, derr := s.d.checkCSR(*body.CSR, regID)
	if derr != nil {
		return nil, derr
	}
	op.csr = csr
	if f, ok := s.d.matchFault(regID, OpRegister, dpsIssueFault); ok {
		s.log.Info("injected fault: the certificate issued for this registration will be wrong",
			zap.Int("fault", f.ID), zap.String("action", f.Action), zap.String("operation_id", op.id))
		op.certFault = &f
	}
	return op, nil
}

// checkCSR applies the service's CSR rules (reference §1.4) and names the
// problem in the answer, which is what a device developer needs to fix it.
// Field-level problems (size, base64, subject, key type) are 400004, as the
// hub credential API answers them; a request that is not PKCS#10 or whose
// signature fails is 400040 (FailedToDecodeCsr), reference §2.3.
func (d *dps) checkCSR(field, registrationID string) (*x509.CertificateRequest, *dpsError) {
	der, err := pki.DecodeCSRField(field)
	if err != nil {
		what := "is not base64 (send the DER of the PKCS#10 request, base64-encoded, without PEM armour)"
		if errors.Is(err, pki.ErrCSRTooLarge) {
			what = "is too large"
		}
		return nil, newDPSError(dpsCodeInvalidField, "The csr field %s: %s.", what, err)
	}
	csr, err := pki.CheckCSR(der, registrationID, d.e.keyPolicy)
	if err == nil {
		return csr, nil
	}
	code, what := dpsCodeInvalidField, ""
	switch {
	case errors.Is(err, pki.ErrCSRTooLarge):
		what = "is too large"
	case errors.Is(err, pki.ErrCSRSubject):
		what = "has the wrong subject: its CN must be the registration ID"
	case errors.Is(err, pki.ErrCSRKey):
		what = "has a key type the certificate policy does not allow"
	case errors.Is(err, pki.ErrCSRSignature):
		code, what = dpsCodeCSRInvalid, "has a signature that does not verify"
	default:
		code, what = dpsCodeCSRInvalid, "cannot be decoded as a PKCS#10 request"
	}
	return nil, newDPSError(code, "The csr field %s: %s.", what, err)
}

// refuse turns a request error into its answer, and records the attempt so
// the admin API shows what the device sent and why it was refused.
func (s *dpsSession) refuse(derr *dpsError, now time.Time) dpsAnswer {
	s.log.Warn("registration refused", zap.Int("error_code", derr.code), zap.String("error", derr.message))
	s.d.e.state.AddRegistration(Registration{
		RegistrationID: s.id.registrationID, Status: dpsStatusFailed, At: now,
		ErrorCode: &derr.code, CompletedAt: &now,
	})
	return dpsAnswer{status: derr.status(), retryAfter: derr.retryAfter, body: derr.body(now)}
}

// poll answers an operation-status request (reference §1.5): 202 while the
// operation is assigning, then 200 with its final state, 404 for an
// operation this device does not have, 429 above the polling limit.
func (s *dpsSession) poll(req dpsRequest) dpsAnswer {
	d := s.d
	now := d.e.now()
	regID := s.id.registrationID
	d.mu.Lock()
	allowed, wait := d.polls.allow(strings.ToLower(regID), now, d.pollLimit, d.pollWindow)
	var (
		op     *dpsOperation
		done   bool
		result dpsOperationStatus
		body   []byte
	)
	if allowed {
		if op = d.ops.get(req.OperationID); op != nil {
			done, result, body = op.done, op.result, op.body
		}
	}
	d.mu.Unlock()

	if !allowed {
		e := newDPSError(dpsCodeThrottled, "Too many operation status requests: DPS allows %d per %s per device.", d.pollLimit, d.pollWindow)
		e.retryAfter = dpsRetryAfter(wait)
		s.log.Info("poll throttled", zap.String("operation_id", req.OperationID), zap.Int("retry_after", e.retryAfter))
		return dpsAnswer{status: e.status(), retryAfter: e.retryAfter, body: e.body(now)}
	}
	if op == nil || !strings.EqualFold(op.registrationID, regID) {
		e := newDPSError(dpsCodeOperationNotFound, "Operation %q was not found for registration ID %q.", req.OperationID, regID)
		s.log.Warn("poll for an unknown operation", zap.String("operation_id", req.OperationID))
		return dpsAnswer{status: e.status(), body: e.body(now)}
	}
	if !done {
		return dpsAnswer{status: 202, retryAfter: d.retryAfter, body: dpsJSON(dpsOperationStatus{
			OperationID: op.id, Status: dpsStatusAssigning,
			RegistrationState: &dpsRegistrationResult{RegistrationID: regID, Status: dpsStatusAssigning},
		})}
	}
	if op.csr != nil && result.Status == dpsStatusAssigned {
		if f, ok := d.matchFault(regID, OpPoll, dpsIssueFault); ok {
			body = s.reissueFaulty(op, result, f, now)
		}
	}
	return dpsAnswer{status: 200, body: body}
}

// reissueFaulty answers this one poll with a chain spoiled by f, leaving the
// operation's true result for later polls.
func (s *dpsSession) reissueFaulty(op *dpsOperation, result dpsOperationStatus, f Fault, now time.Time) []byte {
	state := *result.RegistrationState
	chain, leaf, err := s.d.issue(op.csr, state.DeviceID, &f, now)
	if err != nil {
		s.log.Error("injected issuance fault failed; answering with the true chain", zap.Int("fault", f.ID), zap.Error(err))
		return dpsJSON(result)
	}
	s.log.Info("injected fault: answering with a spoiled certificate chain", zap.Int("fault", f.ID),
		zap.String("action", f.Action), zap.String("serial", NewCertificateInfo(leaf).Serial))
	state.IssuedCertificateChain = dpsChainStrings(chain)
	result.RegistrationState = &state
	return dpsJSON(result)
}
