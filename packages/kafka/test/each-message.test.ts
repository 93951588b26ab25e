import { defineScenarios } from '../../../test/kafka/support/scenarios.ts';

defineScenarios('eachMessage');
