import { filterSuite } from './filter-suite.js';

filterSuite('notify');
