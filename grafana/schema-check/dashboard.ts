// The type every dashboard under grafana/dashboards must satisfy: @grafana/schema's Dashboard,
// with each panel's `options` and `fieldConfig.defaults.custom` typed by its panel type's own
// published config (timeseries, state-timeline, heatmap) and Prometheus queries spelled out
// (the package types queries as the datasource-neutral DataQuery). tests/grafana.rs writes one
// `<name>.check.ts` per dashboard (`export const d: CheckedDashboard = <the JSON>;`) and runs
// `tsc` over them: a misspelt field anywhere is an excess-property error.
import type {
  AnnotationQuery,
  Dashboard,
  DataQuery,
  Panel,
  RowPanel,
} from '@grafana/schema';
import type * as heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as statetimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

// JSON cannot name a TypeScript enum member: accept each string enum's values instead
// (`${MappingType}` is 'value' | 'range' | ...). Numeric enums already accept their numbers.
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/** A Prometheus query as Grafana's Prometheus datasource stores it. */
export interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  format?: 'time_series' | 'table' | 'heatmap';
  range?: boolean;
  instant?: boolean;
  interval?: string;
  // Annotation queries only.
  titleFormat?: string;
  textFormat?: string;
  step?: string;
  useValueForTime?: boolean;
}

type TypedPanel<Kind extends string, Options, Custom> = Omit<Panel<Options, Custom>, 'type' | 'targets'> & {
  type: Kind;
  targets: PromQuery[];
};

type AnyPanel =
  | TypedPanel<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | TypedPanel<'state-timeline', statetimeline.Options, statetimeline.FieldConfig>
  | TypedPanel<'heatmap', heatmap.Options, heatmap.FieldConfig>;

export type CheckedDashboard = Json<
  Omit<Dashboard, 'panels' | 'annotations'> & {
    panels: Array<AnyPanel | (Omit<RowPanel, 'panels'> & { panels: AnyPanel[] })>;
    annotations: { list: AnnotationQuery<PromQuery>[] };
  }
>;
