package dps

// Hint says, in plain language, what to do about the error. It is empty when
// there is nothing better to say than to retry.
func (e *Error) Hint() string {
	if e.hint != "" {
		return e.hint
	}
	switch e.Kind {
	case KindAuth:
		return hintAuth
	case KindRefused:
		return refusedHint(e.connack)
	case KindTLS:
		return hintTLS
	case KindNetwork:
		return "DPS could not be reached: check the network, DNS and the firewall (outbound TCP 8883); the agent retries"
	case KindTimeout:
		return "DPS did not answer in time; the agent retries"
	case KindProtocol:
		return "DPS sent an answer this agent does not understand; the agent retries, and if this persists check advanced.dps_endpoint points at DPS"
	case KindService:
		return serviceHint(e.Op, e.State, e.httpStatus(), e.Code)
	}
	return ""
}

const (
	hintAuth = "DPS refused the onboarding credential: check id_scope and registration_id, and that an enrollment exists for them; " +
		"for a symmetric key, check the key (for an enrollment group key, set onboarding.group_key: true so the device key is derived); " +
		"for X.509, the certificate's CN must equal the registration ID and the chain must include the intermediates up to the enrolled CA"
	hintTLS = "the DPS server certificate could not be verified: if you use the emulator or a TLS-inspecting proxy, " +
		"set advanced.trust_bundle_file to its CA certificate (PEM); also check the device clock and advanced.dps_endpoint"
	hintCredential = "the onboarding credential was not accepted: check the key (for an enrollment group key, set onboarding.group_key: true), " +
		"or include the intermediates in the birth certificate chain"
	hintNotFound = "no enrollment for this registration ID in this ID scope: check id_scope and registration_id, " +
		"and create an individual enrollment or an enrollment group matching the onboarding method"
	hintBadRequest = "DPS rejected the request as invalid: check registration_id; if a CSR was sent, its subject CN must equal the registration ID " +
		"and its key must be ECDSA P-256 or P-384 (Azure's PKI takes no RSA), and the enrollment must have certificate issuance enabled"
	hintThrottled = "DPS is throttling this device or the whole DPS instance; the agent waits as long as DPS asks"
	hintServer    = "DPS had an internal problem; this is usually temporary and the agent retries with backoff"
	hintDisabled  = "the enrollment or this device's registration is disabled in DPS: enable it (Azure portal: the enrollment's \"Enable this enrollment\", or the registration record), then provision again"
	hintFailed    = "DPS could not assign the device: check the enrollment's IoT hubs, allocation policy and any custom allocation function"
)

func refusedHint(code byte) string {
	switch code {
	case connackServerUnavailable:
		return "DPS is temporarily unavailable; the agent retries"
	case connackIdentifierRejected:
		return "DPS rejected the registration ID as MQTT client ID: check registration_id"
	case connackBadProtocol:
		return "DPS does not accept this MQTT protocol version: check advanced.dps_endpoint points at DPS"
	}
	return ""
}

// serviceHint is the catalogue for DPS's documented statuses and codes.
func serviceHint(op, state string, status, code int) string {
	if state == StateDisabled {
		return hintDisabled
	}
	switch code {
	case 401002:
		return hintCredential
	case 400000:
		// The mock DPS's answer to a CSR the enrollment cannot serve
		// (reference §1.4).
		return "the enrollment is not set up to issue certificates: link a certificate (credential) policy to it in DPS, or register without a CSR"
	case 400040:
		return "DPS could not decode the CSR or verify its signature: the key may be damaged or the TPM misbehaving; provisioning with a new key usually cures it"
	}
	switch {
	case status == 404 && op == OpPoll:
		return "DPS no longer knows this registration operation (it expired or was lost): register again"
	case status == 400:
		return hintBadRequest
	case status == 401 || status == 403:
		return hintCredential
	case status == 404:
		return hintNotFound
	case status == 405 || status == 415:
		return "DPS did not accept the request's form: check advanced.dps_endpoint and advanced api-version; this may be an agent bug"
	case status == 409:
		return "another operation on this registration is in progress in DPS: wait, then provision again"
	case status == 412:
		return "the registration changed in DPS while this request was made (precondition failed): provision again"
	case status == 429:
		return hintThrottled
	case status >= 500:
		return hintServer
	case state == StateFailed:
		return hintFailed
	}
	return ""
}
