import { MAX_PAGE } from '../pagination';
import { ArgsType, Field, Int, ObjectType, type ClassType } from 'type-graphql';

@ObjectType()
export class PageInfo {
  @Field() hasNextPage: boolean;
  @Field(() => String, { nullable: true }) endCursor: string | null;
}

/** A Relay connection type for `Node`; list fields cost `first` × their selection (see cost.ts). */
export function ConnectionType<T extends object>(Node: ClassType<T>, name: string) {
  @ObjectType(`${name}Edge`)
  class Edge {
    @Field() cursor: string;
    @Field(() => Node) node: T;
  }
  @ObjectType(`${name}Connection`)
  class Connection {
    @Field(() => [Edge]) edges: Edge[];
    @Field(() => PageInfo) pageInfo: PageInfo;
  }
  return Connection;
}

/** Complexity of a paginated field: its selection's cost once per requested item. */
export const connectionComplexity = ({ args, childComplexity }: { args: { first?: number | null }; childComplexity: number }) =>
  // Clamped to the page sizes a list answers (1..MAX_PAGE): a negative `first` made a negative cost
  // that let other fields of the query past the limit before the list refused it.
  1 + Math.min(Math.max(args.first ?? 20, 1), MAX_PAGE) * childComplexity;

@ArgsType()
export class PageArgsType {
  @Field(() => Int, { nullable: true }) first?: number;
  @Field(() => String, { nullable: true }) after?: string;
}
