package emulator

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// dpsIdentity is who a DPS connection authenticated as, and through which
// enrollment. Individual enrollments take precedence over groups, as in DPS.
type dpsIdentity struct {
	registrationID string // as the device spells it (client ID and CN)
	apiVersion     dpsAPIVersion
	clientVersion  string
	enrollmentKey  string
	groupID        string // "" for an individual enrollment
	method         string // AttestSymmetricKey or AttestX509
	leaf           *x509.Certificate
}

func (id *dpsIdentity) fields() []zap.Field {
	f := []zap.Field{
		zap.String("attestation", id.method), zap.String("enrollment", id.enrollmentKey),
		zap.Stringer("api_version", id.apiVersion), zap.String("client_version", id.clientVersion),
	}
	if id.leaf != nil {
		f = append(f, zap.String("certificate_sha256", Thumbprint(id.leaf)))
	}
	return f
}

// Why authenticate refused, for tests and logs; never carries a secret.
var (
	errDPSUsername   = errors.New("unusable user name")
	errDPSNoEnrolled = errors.New("no enrollment accepts these credentials")
)

// authenticate checks the user name against the client ID and the ID scope,
// then the credential: a SAS token as the password, or else the TLS client
// certificate chain (reference §1.2).
func (d *dps) authenticate(req *mqttsrv.ConnectRequest) (*dpsIdentity, error) {
	if !req.HasUsername {
		return nil, fmt.Errorf("%w: none sent; DPS wants {id scope}/registrations/{registration ID}/api-version={version}", errDPSUsername)
	}
	u, err := parseDPSUsername(req.Username)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDPSUsername, err)
	}
	switch {
	case !strings.EqualFold(u.IDScope, d.e.cfg.IDScope):
		return nil, fmt.Errorf("%w: ID scope %q, this DPS is %q", errDPSUsername, u.IDScope, d.e.cfg.IDScope)
	case !strings.EqualFold(u.RegistrationID, req.ClientID):
		return nil, fmt.Errorf("%w: it names registration %q but the client ID is %q; they must be equal",
			errDPSUsername, u.RegistrationID, req.ClientID)
	case !ValidRegistrationID(req.ClientID):
		return nil, fmt.Errorf("%w: registration ID %q: use up to 128 letters, digits and - . _ :, not starting or ending with a symbol",
			errDPSUsername, req.ClientID)
	}
	id := &dpsIdentity{registrationID: req.ClientID, apiVersion: u.APIVersion, clientVersion: u.ClientVersion}
	now := d.e.now()
	if req.HasPassword && len(req.Password) > 0 {
		id.method = AttestSymmetricKey
		if err := d.authenticateSAS(id, string(req.Password), now); err != nil {
			return nil, err
		}
		return id, nil
	}
	chain := req.PeerCertificates()
	if len(chain) == 0 {
		return nil, errors.New("no credential: send a SAS token as the password, or a client certificate with an empty password")
	}
	id.method = AttestX509
	if err := d.authenticateX509(id, chain, now); err != nil {
		return nil, err
	}
	return id, nil
}

// authenticateSAS verifies the token against the individual enrollment's
// keys, or against the device key derived from each symmetric-key group's
// keys (reference §1.2); the first group that verifies is the device's.
func (d *dps) authenticateSAS(id *dpsIdentity, password string, now time.Time) error {
	tok, err := sas.Parse(password)
	if err != nil {
		return fmt.Errorf("password: %w", err)
	}
	// DPS documents skn=registration and the embedded C SDK sends none.
	if skn := tok.KeyName(); skn != "" && skn != sas.KeyNameRegistration {
		return fmt.Errorf("token names key %q; device tokens carry skn=%s or none", skn, sas.KeyNameRegistration)
	}
	resource := sas.DPSResource(d.e.cfg.IDScope, id.registrationID)
	if enr, ok := d.e.state.IndividualEnrollment(id.registrationID); ok {
		if enr.Attestation.Type != AttestSymmetricKey {
			return fmt.Errorf("%w: the individual enrollment of %q uses %s attestation, not a symmetric key",
				errDPSNoEnrolled, id.registrationID, enr.Attestation.Type)
		}
		if err := sas.Verify(tok, resource, enr.symmetricKeys(), now); err != nil {
			return fmt.Errorf("individual enrollment %s: %w", enr.Key(), err)
		}
		id.enrollmentKey = enr.Key()
		return nil
	}
	var reasons []error
	for _, g := range d.e.state.Groups(AttestSymmetricKey) {
		err := sas.Verify(tok, resource, dpsDeviceKeys(g, id.registrationID), now)
		if err == nil {
			id.enrollmentKey, id.groupID = g.Key(), g.GroupID
			return nil
		}
		if !errors.Is(err, sas.ErrBadSignature) {
			// Expired or for another resource: no group will do better.
			return fmt.Errorf("token: %w", err)
		}
		reasons = append(reasons, fmt.Errorf("group %s: %w", g.GroupID, err))
	}
	if len(reasons) == 0 {
		return fmt.Errorf("%w: %q has no individual enrollment and there is no symmetric-key group", errDPSNoEnrolled, id.registrationID)
	}
	return fmt.Errorf("%w: %q has no individual enrollment and no group's derived key verifies the token: %w",
		errDPSNoEnrolled, id.registrationID, errors.Join(reasons...))
}

// dpsDeviceKeys are the device keys a group member signs with: each group
// key, HMAC'd over the registration ID (reference §1.2).
func dpsDeviceKeys(g Enrollment, registrationID string) [][]byte {
	groupKeys := g.symmetricKeys()
	keys := make([][]byte, 0, len(groupKeys))
	for _, k := range groupKeys {
		keys = append(keys, sas.DeriveDeviceKey(k, registrationID))
	}
	return keys
}

// authenticateX509 accepts a chain (whose key the TLS handshake has proven)
// when its leaf names the registration and either is the individual
// enrollment's certificate or chains to an X.509 group's CA.
func (d *dps) authenticateX509(id *dpsIdentity, chain []*x509.Certificate, now time.Time) error {
	leaf := chain[0]
	id.leaf = leaf
	if !strings.EqualFold(leaf.Subject.CommonName, id.registrationID) {
		return fmt.Errorf("certificate CN %q is not the registration ID %q", leaf.Subject.CommonName, id.registrationID)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate %q is valid from %s to %s, not now", leaf.Subject.CommonName,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if enr, ok := d.e.state.IndividualEnrollment(id.registrationID); ok {
		if enr.Attestation.Type != AttestX509 {
			return fmt.Errorf("%w: the individual enrollment of %q uses %s attestation, not X.509",
				errDPSNoEnrolled, id.registrationID, enr.Attestation.Type)
		}
		certs, err := enr.certificates()
		if err != nil {
			return fmt.Errorf("individual enrollment %s: %w", enr.Key(), err)
		}
		thumb := Thumbprint(leaf)
		if !slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return Thumbprint(c) == thumb }) {
			return fmt.Errorf("%w: certificate %s is not the one enrolled for %q", errDPSNoEnrolled, thumb, id.registrationID)
		}
		id.enrollmentKey = enr.Key()
		return nil
	}
	var reasons []error
	for _, g := range d.e.state.Groups(AttestX509) {
		cas, err := g.certificates()
		if err == nil {
			err = dpsVerifyChain(chain, cas, now)
		}
		if err == nil {
			id.enrollmentKey, id.groupID = g.Key(), g.GroupID
			return nil
		}
		reasons = append(reasons, fmt.Errorf("group %s: %w", g.GroupID, err))
	}
	if len(reasons) == 0 {
		return fmt.Errorf("%w: %q has no individual enrollment and there is no X.509 group", errDPSNoEnrolled, id.registrationID)
	}
	return fmt.Errorf("%w: %q has no individual enrollment and its chain verifies to no group's CA: %w",
		errDPSNoEnrolled, id.registrationID, errors.Join(reasons...))
}

// dpsVerifyChain verifies the presented chain (leaf first) up to one of cas,
// with the intermediates the device sent, for client authentication.
func dpsVerifyChain(chain, cas []*x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("chain does not verify to the group's CA: %w", err)
	}
	return nil
}
