import { filterSuite } from './filter-suite.js';

filterSuite('direct');
