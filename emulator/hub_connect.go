package emulator

import (
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Authentication methods, as Device.AuthMethod records them.
const (
	hubAuthSAS  = "sas"
	hubAuthX509 = "x509"
)

// hubRefusal is why a CONNECT is refused and the CONNACK code that says so.
//
// The codes follow one rule: 4 (bad user name or password) when the user
// name or password cannot be read at all (absent, not
// "{host}/{deviceId}/?api-version=...", a password that is not a
// SharedAccessSignature); 5 (not authorized) for credentials that can be read
// but do not admit this client to this hub (another hub's host, a user name
// for another client ID, an unknown device, a device assigned elsewhere, a
// bad, expired or misdirected token, an untrusted or revoked certificate);
// 2 (identifier rejected) for module identities, which are not emulated;
// 3 (server unavailable) for injected throttling and server errors. Over
// MQTT 3.1.1 IoT Hub has nothing finer to say than these codes.
type hubRefusal struct {
	code mqttsrv.ConnackCode
	err  error
}

func hubRefuse(code mqttsrv.ConnackCode, format string, args ...any) *hubRefusal {
	return &hubRefusal{code: code, err: fmt.Errorf(format, args...)}
}

// hubIdentity is who an accepted CONNECT authenticated as.
type hubIdentity struct {
	device     Device // a copy of the State's record at connect time
	username   hubUsername
	authMethod string
	sasExpiry  time.Time         // SAS: when the token stops being valid
	leaf       *x509.Certificate // X.509: the certificate presented
}

// Connect authenticates a device and opens its session (mqttsrv.Handler).
func (h *hub) Connect(ctx context.Context, req *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	log := h.log.With(zap.String("client_id", req.ClientID), zap.Stringer("remote", req.RemoteAddr))
	if r := h.connectFault(ctx, req); r != nil {
		log.Info("connection refused by an injected fault", zap.Stringer("connack", r.code), zap.Error(r.err))
		return nil, r.code
	}
	id, r := h.authenticate(req)
	if r != nil {
		log.Info("connection refused", zap.Stringer("connack", r.code), zap.Error(r.err))
		return nil, r.code
	}
	s := h.open(ctx, req, id)
	s.log.Info("device connected",
		zap.String("auth", id.authMethod),
		zap.String("api_version", id.username.APIVersion),
		zap.String("client_type", id.username.ClientType),
		zap.String("model_id", id.username.ModelID),
		zap.Bool("clean_session", req.CleanSession),
		zap.Bool("session_present", s.present),
		zap.Strings("restored_subscriptions", s.filters()),
		hubCertificateField(id.leaf))
	return s, mqttsrv.Accepted
}

func hubCertificateField(leaf *x509.Certificate) zap.Field {
	if leaf == nil {
		return zap.Skip()
	}
	return zap.Object("certificate", hubZapCertificate{leaf})
}

// hubZapCertificate logs what identifies a certificate to a person.
type hubZapCertificate struct{ c *x509.Certificate }

func (z hubZapCertificate) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("subject", z.c.Subject.String())
	enc.AddString("issuer", z.c.Issuer.String())
	enc.AddString("serial", strings.ToUpper(z.c.SerialNumber.Text(16)))
	enc.AddString("not_after", z.c.NotAfter.UTC().Format(time.RFC3339))
	enc.AddString("sha256", Thumbprint(z.c))
	return nil
}

// connectFault applies an injected fault for OpConnect. A drop closes the
// connection without CONNACK; throttling and server errors are CONNACK 3,
// the only way MQTT 3.1.1 can say "try later"; an injected 401/403/404 is 5
// and a 400 is 4. Match passes over faults whose action a CONNECT cannot
// carry out (FaultApplies), leaving them to the request they were meant for.
func (h *hub) connectFault(ctx context.Context, req *mqttsrv.ConnectRequest) *hubRefusal {
	f, ok := h.e.faults.Match(EndpointHub, req.ClientID, OpConnect)
	if !ok {
		return nil
	}
	switch f.Action {
	case ActionDrop:
		req.Conn.Close(fmt.Errorf("injected fault %d: connection dropped", f.ID))
		return hubRefuse(mqttsrv.RefusedServerUnavailable, "injected fault %d: dropped without CONNACK", f.ID)
	case ActionDelay:
		h.log.Info("delaying CONNACK (injected fault)", zap.String("client_id", req.ClientID), zap.Int("fault", f.ID), zap.Duration("delay", f.DelayDuration()))
		if !h.sleep(ctx, f.DelayDuration()) {
			return hubRefuse(mqttsrv.RefusedServerUnavailable, "connection ended during an injected delay")
		}
		return nil
	case ActionThrottle:
		return hubRefuse(mqttsrv.RefusedServerUnavailable, "injected fault %d: throttled", f.ID)
	case ActionError:
		switch f.Status {
		case 400:
			return hubRefuse(mqttsrv.RefusedBadUsernameOrPassword, "injected fault %d: error %d", f.ID, f.Status)
		case 401, 403, 404:
			return hubRefuse(mqttsrv.RefusedNotAuthorized, "injected fault %d: error %d", f.ID, f.Status)
		}
		return hubRefuse(mqttsrv.RefusedServerUnavailable, "injected fault %d: error %d", f.ID, f.Status)
	}
	return nil
}

// authenticate checks a CONNECT against the user name rules of reference
// §2.1 and the device's credentials.
func (h *hub) authenticate(req *mqttsrv.ConnectRequest) (*hubIdentity, *hubRefusal) {
	if strings.Contains(req.ClientID, "/") {
		return nil, hubRefuse(mqttsrv.RefusedIdentifierRejected, "client ID %q is a module identity ({deviceId}/{moduleId}); modules are not emulated", req.ClientID)
	}
	if !req.HasUsername || req.Username == "" {
		return nil, hubRefuse(mqttsrv.RefusedBadUsernameOrPassword, "no user name: IoT Hub wants {hub host}/{device ID}/?api-version={version}")
	}
	u, err := parseHubUsername(req.Username)
	if err != nil {
		return nil, &hubRefusal{mqttsrv.RefusedBadUsernameOrPassword, err}
	}
	switch {
	case u.ModuleID != "":
		return nil, hubRefuse(mqttsrv.RefusedIdentifierRejected, "user name %q names module %q; modules are not emulated", req.Username, u.ModuleID)
	case !strings.EqualFold(u.Host, h.cfg.Host):
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "user name names hub %q, this is %q", u.Host, h.cfg.Host)
	case u.DeviceID != req.ClientID:
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "user name names device %q, the client ID is %q; they must be equal", u.DeviceID, req.ClientID)
	}
	d, ok := h.e.state.Device(req.ClientID)
	if !ok {
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "no device %q: a device exists once DPS has assigned it", req.ClientID)
	}
	if d.DeviceID != req.ClientID {
		// The State looks IDs up case-insensitively; IoT Hub's device IDs
		// are case-sensitive, and certificates and tokens name the exact one.
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "no device %q: device IDs are case-sensitive, the device is registered as %q", req.ClientID, d.DeviceID)
	}
	if d.Hub != h.cfg.Name {
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "device %q is assigned to hub %q, not %q", req.ClientID, d.Hub, h.cfg.Name)
	}
	id := &hubIdentity{device: d, username: u}
	now := h.e.now()
	if req.HasPassword && len(req.Password) > 0 {
		return h.authenticateSAS(id, string(req.Password), now)
	}
	chain := req.PeerCertificates()
	if len(chain) == 0 {
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "no credential: send a SAS token as the password, or a client certificate with an empty password")
	}
	return h.authenticateX509(id, chain, now)
}

func (h *hub) authenticateSAS(id *hubIdentity, password string, now time.Time) (*hubIdentity, *hubRefusal) {
	tok, err := sas.Parse(password)
	if err != nil {
		return nil, &hubRefusal{mqttsrv.RefusedBadUsernameOrPassword, fmt.Errorf("password: %w", err)}
	}
	if tok.KeyName() != "" {
		// Device tokens carry no skn; only shared access policy tokens do,
		// and policies are not emulated.
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "token names key %q: device tokens carry no skn (shared access policies are not emulated)", tok.KeyName())
	}
	if len(id.device.SymmetricKeys) == 0 {
		return nil, hubRefuse(mqttsrv.RefusedNotAuthorized, "device %q has no symmetric key; it authenticates with X.509", id.device.DeviceID)
	}
	resource := sas.HubResource(h.cfg.Host, id.username.DeviceID)
	if err := sas.Verify(tok, resource, id.device.SymmetricKeys, now); err != nil {
		return nil, &hubRefusal{mqttsrv.RefusedNotAuthorized, err}
	}
	id.authMethod, id.sasExpiry = hubAuthSAS, tok.Expiry()
	return id, nil
}

// authenticateX509 accepts a chain the device proved it holds the key of
// (the TLS handshake checked the CertificateVerify) when one of these holds:
// it was issued by the emulator's device PKI for this device and is not
// revoked; its leaf is registered by thumbprint (individual enrollment,
// self-signed or not); or it chains to a CA of the device's enrollment group
// and names the device in its CN.
func (h *hub) authenticateX509(id *hubIdentity, chain []*x509.Certificate, now time.Time) (*hubIdentity, *hubRefusal) {
	leaf := chain[0]
	d := id.device
	var reasons []error
	if d.Issued {
		cn, err := h.e.deviceCA.VerifyClient(chain, now)
		switch {
		case err != nil:
			reasons = append(reasons, err)
		case cn != id.username.DeviceID:
			reasons = append(reasons, fmt.Errorf("issued certificate names %q, not %q", cn, id.username.DeviceID))
		default:
			id.authMethod, id.leaf = hubAuthX509, leaf
			return id, nil
		}
	}
	if len(d.Thumbprints) > 0 {
		if err := hubCheckThumbprint(leaf, d.Thumbprints, now); err != nil {
			reasons = append(reasons, err)
		} else {
			id.authMethod, id.leaf = hubAuthX509, leaf
			return id, nil
		}
	}
	if len(d.CAs) > 0 {
		if err := hubCheckGroupChain(chain, d.CAs, id.username.DeviceID, now); err != nil {
			reasons = append(reasons, err)
		} else {
			id.authMethod, id.leaf = hubAuthX509, leaf
			return id, nil
		}
	}
	if len(reasons) == 0 {
		reasons = append(reasons, fmt.Errorf("device %q has no X.509 credential registered", d.DeviceID))
	}
	return nil, &hubRefusal{mqttsrv.RefusedNotAuthorized, fmt.Errorf("certificate %q refused: %w", leaf.Subject.CommonName, errors.Join(reasons...))}
}

// hubCheckThumbprint matches the leaf against registered thumbprints. Azure
// takes SHA-1 or SHA-256 thumbprints; both are compared, case-insensitively.
func hubCheckThumbprint(leaf *x509.Certificate, thumbprints []string, now time.Time) error {
	sum1 := sha1.Sum(leaf.Raw)
	have := []string{Thumbprint(leaf), strings.ToUpper(hex.EncodeToString(sum1[:]))}
	if !slices.ContainsFunc(thumbprints, func(t string) bool {
		return slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, t) })
	}) {
		return fmt.Errorf("thumbprint %s is not registered for the device", have[0])
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("registered certificate is valid from %s to %s, not now", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// hubCheckGroupChain verifies the chain up to one of the group's CAs. Device
// certificates of third-party PKIs often lack the clientAuth usage, so any
// usage is accepted, as DPS and IoT Hub do.
func hubCheckGroupChain(chain []*x509.Certificate, cas []*x509.Certificate, deviceID string, now time.Time) error {
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("chain does not verify to the enrollment group's CA: %w", err)
	}
	if leaf.Subject.CommonName != deviceID {
		return fmt.Errorf("certificate CN %q is not the device ID %q", leaf.Subject.CommonName, deviceID)
	}
	return nil
}
