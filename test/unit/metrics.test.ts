import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../bridge/metrics.js';

describe('hookbridge_instance_info', () => {
  it('has one series, with the current slot and role, and none before the instance has a slot', async () => {
    let role: 'leader' | 'standby' = 'standby';
    let slot: number | undefined;
    const metrics = createMetrics({ filterConnections: () => 0, replicationLag: async () => undefined, role: () => role, slot: () => slot });
    const series = async () => (await metrics.instanceInfo.get()).values.map((v) => ({ labels: v.labels, value: v.value }));
    expect(await series()).toEqual([]);
    slot = 3;
    expect(await series()).toEqual([{ labels: { slot: '3', role: 'standby' }, value: 1 }]);
    role = 'leader';
    expect(await series()).toEqual([{ labels: { slot: '3', role: 'leader' }, value: 1 }]);
    expect(await metrics.registry.metrics()).toMatch(/^hookbridge_instance_info\{slot="3",role="leader"\} 1$/m);
  });
});
