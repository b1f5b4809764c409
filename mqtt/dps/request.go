package dps

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// deviceRegistration is the register request body (reference §1.4): the
// registration ID always, payload and csr only when given.
type deviceRegistration struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	CSR            string          `json:"csr,omitempty"`
}

// maxCSR is the hub credential API's documented CSR limit, which is also
// far above any CSR for the key types DPS takes.
const maxCSR = 8 << 10

// registerBody builds the register request. csr is PKCS#10 DER, sent as
// standard base64 without PEM armour; payload must be JSON when given.
func registerBody(registrationID string, csr []byte, payload json.RawMessage) ([]byte, error) {
	if len(csr) > maxCSR {
		return nil, fmt.Errorf("the CSR is %d bytes, more than %d", len(csr), maxCSR)
	}
	if len(csr) > 0 && csr[0] == '-' {
		return nil, errors.New("the CSR must be DER, not PEM")
	}
	if len(payload) > 0 && !json.Valid(payload) {
		return nil, errors.New("the registration payload is not valid JSON")
	}
	r := deviceRegistration{RegistrationID: registrationID, Payload: payload}
	if len(csr) > 0 {
		r.CSR = base64.StdEncoding.EncodeToString(csr)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode the register request: %w", err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("the register request is %d bytes, more than DPS's %d-byte limit: make the payload smaller", len(body), maxBody)
	}
	return body, nil
}
