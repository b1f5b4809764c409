package agent

import (
	"context"
	"fmt"
)

// Provision is one foreground attempt at what Run does first: use the stored
// identity, or register with DPS for a new one, then connect to the hub once
// and report. It does not retry; the error says what failed, for
// `dpsagent provision` to show and map to an exit code. With force, a new
// identity is registered even when the stored one is usable.
func (a *Agent) Provision(ctx context.Context, force bool) (Status, error) {
	id, err := a.provisionOnce(ctx, force)
	if err != nil {
		a.recordError(err, "")
		return a.Status(), err
	}
	s, err := a.connectOnce(ctx, id)
	if err != nil {
		err = fmt.Errorf("connect to the assigned hub %s: %w", id.rec.AssignedHub, err)
		a.recordError(err, "check the network path to the hub (port 8883)")
		return a.Status(), err
	}
	defer s.Close()
	a.report(ctx, s, id)
	if id.leaf != nil {
		a.decide(id)
	}
	return a.Status(), nil
}

func (a *Agent) provisionOnce(ctx context.Context, force bool) (*identity, error) {
	m, err := a.opts.Store.Load()
	if err != nil && m == nil {
		return nil, fmt.Errorf("read the state directory: %w", err)
	}
	if m.Current != nil && !force {
		if id, err := a.loadIdentity(*m.Current); err == nil {
			a.log.Info("this device already has a valid identity; not registering again (use --force to register anew)")
			a.showIdentity(id)
			return id, nil
		}
	}
	return a.provision(ctx)
}
