// The adapter's small pure pieces: backoff, the shared failure streak, the memory of its
// own requeues, bounded header text.
import { describe, expect, it } from 'vitest';
import { backoffDelayMs } from '../src/backoff.ts';
import { truncateUtf8 } from '../src/dead-letter-headers.ts';
import { FailureStreak } from '../src/failure-streak.ts';
import { OwnRequeues } from '../src/own-requeues.ts';

const backoff = { minDelayMs: 100, maxDelayMs: 1_000, factor: 2 };

describe('backoffDelayMs', () => {
  it('grows exponentially, with equal jitter, and never exceeds maxDelayMs', () => {
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelayMs(backoff, n, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelayMs(backoff, n, () => 1))).toEqual([
      100, 200, 400, 800, 1000, 1000,
    ]);
  });
});

describe('FailureStreak', () => {
  it('steps up once per backoff period however many deliveries fail together, and resets on success', () => {
    let now = 0;
    const streak = new FailureStreak(backoff, () => now);
    for (let i = 0; i < 100; i++) streak.fail(); // a whole prefetch failing at once
    expect(streak.step).toBe(1);
    now += 100;
    streak.fail();
    expect(streak.step).toBe(2);
    now += 50;
    streak.fail();
    expect(streak.step).toBe(2); // the second step lasts 200 ms
    now += 150;
    expect(streak.fail()).toBeLessThanOrEqual(400);
    expect(streak.step).toBe(3);
    streak.reset();
    expect(streak.step).toBe(0);
    streak.fail();
    expect(streak.step).toBe(1);
  });
});

describe('OwnRequeues', () => {
  it('answers once per requeue, and forgets the oldest past its capacity', () => {
    const own = new OwnRequeues(2);
    own.add('a');
    own.add('a');
    expect(own.take('a')).toBe(true);
    expect(own.take('a')).toBe(true);
    expect(own.take('a')).toBe(false);
    own.add('x');
    own.add('y');
    own.add('z');
    expect(own.size).toBe(2);
    expect(own.take('x')).toBe(false);
    expect(own.take('z')).toBe(true);
  });
});

describe('truncateUtf8', () => {
  it('keeps short text, and cuts long text within the byte limit, never inside a character', () => {
    expect(truncateUtf8('short', 10)).toBe('short');
    const cut = truncateUtf8('€'.repeat(100), 50);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(50);
    expect(cut).toMatch(/^€+…\[truncated\]$/);
  });
});
