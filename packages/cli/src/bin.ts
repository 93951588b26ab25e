#!/usr/bin/env node
import { main } from './main.js';

// Exit explicitly: a broker client may keep timers alive after the command is done.
process.exit(await main(process.argv));
