// The adapter's small pure pieces: the shared failure streak, the memory of its own
// requeues. (The backoff and bounded header text are core's: packages/core/test/adapter.test.ts.)
import { describe, expect, it } from 'vitest';
import { FailureStreak } from '../src/failure-streak.ts';
import { OwnRequeues } from '../src/own-requeues.ts';

const backoff = { minDelayMs: 100, maxDelayMs: 1_000, factor: 2 };

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
